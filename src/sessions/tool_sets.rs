//! The configured tool sets a session can be bound to.

use crate::config::ToolSetConfig;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub struct ToolSet {
    pub name: Arc<str>,
    pub description: String,
    pub tools: Arc<[String]>,
}

/// The catalog, in configuration order.
#[derive(Debug, Clone)]
pub struct ToolSets(Vec<ToolSet>);

impl ToolSets {
    pub fn from_config(configs: &[ToolSetConfig]) -> Self {
        Self(
            configs
                .iter()
                .map(|c| ToolSet {
                    name: Arc::from(c.name.as_str()),
                    description: c.description.clone(),
                    tools: Arc::from(c.tools.clone()),
                })
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&ToolSet> {
        self.0.iter().find(|t| &*t.name == name)
    }

    pub fn all(&self) -> &[ToolSet] {
        &self.0
    }

    pub fn names(&self) -> Vec<Arc<str>> {
        self.0.iter().map(|t| t.name.clone()).collect()
    }
}
