//! The properties of the fuzz targets (see `props`); the targets themselves
//! are in `fuzz_targets/`.

pub mod props;
