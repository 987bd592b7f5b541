//! A strict parser for the Structured Field Values (RFC 9651) that the
//! rate-limit headers use: a List of Items whose bare items and parameter
//! values are Integers, Decimals, Strings, Tokens or Booleans. Inner lists,
//! byte sequences, dates and display strings are refused (the renderer never
//! writes them). Written from the RFC's parsing algorithms (§4.2), not from
//! the renderer, so that a header it cannot read is a header clients cannot.

#[derive(Debug, Clone, PartialEq)]
pub enum Bare {
    Integer(i64),
    Decimal(f64),
    String(String),
    Token(String),
    Boolean(bool),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub bare: Bare,
    /// In order; a repeated key is kept twice (RFC 9651 would keep the last
    /// value): callers decide whether that is acceptable.
    pub params: Vec<(String, Bare)>,
}

impl Item {
    pub fn param(&self, key: &str) -> Option<&Bare> {
        self.params.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v)
    }
}

/// RFC 9651 §4.2: parse a List field value (leading and trailing spaces
/// discarded; an empty value is an empty list).
pub fn parse_list(input: &str) -> Result<Vec<Item>, String> {
    let mut p = Parser { s: input.as_bytes(), i: 0 };
    if !input.is_ascii() {
        return Err("not ASCII".into());
    }
    p.skip_sp();
    let mut members = Vec::new();
    while !p.eof() {
        members.push(p.item()?);
        p.skip_ows();
        if p.eof() {
            return Ok(members);
        }
        p.expect(b',')?;
        p.skip_ows();
        if p.eof() {
            return Err("trailing comma".into());
        }
    }
    Ok(members)
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn eof(&self) -> bool {
        self.i >= self.s.len()
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(format!("expected {:?} at {}", c as char, self.i))
        }
    }

    fn skip_sp(&mut self) {
        while self.peek() == Some(b' ') {
            self.i += 1;
        }
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }

    fn item(&mut self) -> Result<Item, String> {
        if self.peek() == Some(b'(') {
            return Err("inner lists are not expected".into());
        }
        let bare = self.bare()?;
        let params = self.params()?;
        Ok(Item { bare, params })
    }

    fn params(&mut self) -> Result<Vec<(String, Bare)>, String> {
        let mut params = Vec::new();
        while self.peek() == Some(b';') {
            self.i += 1;
            self.skip_sp();
            let key = self.key()?;
            let value = if self.peek() == Some(b'=') {
                self.i += 1;
                self.bare()?
            } else {
                Bare::Boolean(true)
            };
            params.push((key, value));
        }
        Ok(params)
    }

    fn key(&mut self) -> Result<String, String> {
        let start = self.i;
        match self.peek() {
            Some(c) if c.is_ascii_lowercase() || c == b'*' => self.i += 1,
            _ => return Err(format!("a key must start with a-z or '*' at {start}")),
        }
        while matches!(self.peek(), Some(c) if c.is_ascii_lowercase() || c.is_ascii_digit() || b"_-.*".contains(&c))
        {
            self.i += 1;
        }
        Ok(String::from_utf8(self.s[start..self.i].to_vec()).expect("ASCII"))
    }

    fn bare(&mut self) -> Result<Bare, String> {
        match self.peek() {
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(b'"') => self.string(),
            Some(b'?') => {
                self.i += 1;
                let b = match self.peek() {
                    Some(b'1') => true,
                    Some(b'0') => false,
                    _ => return Err("a boolean is ?0 or ?1".into()),
                };
                self.i += 1;
                Ok(Bare::Boolean(b))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'*' => {
                let start = self.i;
                self.i += 1;
                while matches!(self.peek(), Some(c) if is_tchar(c) || c == b':' || c == b'/') {
                    self.i += 1;
                }
                Ok(Bare::Token(String::from_utf8(self.s[start..self.i].to_vec()).expect("ASCII")))
            }
            other => Err(format!("no bare item starts with {other:?} at {}", self.i)),
        }
    }

    /// §4.2.4: at most 15 integer digits; a decimal at most 12 before and 3
    /// after its point.
    fn number(&mut self) -> Result<Bare, String> {
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        if !matches!(self.peek(), Some(b'0'..=b'9')) {
            return Err("a number needs a digit".into());
        }
        let start = self.i;
        let mut point = None;
        while let Some(c) = self.peek() {
            if c.is_ascii_digit() {
                self.i += 1;
            } else if c == b'.' && point.is_none() {
                if self.i - start > 12 {
                    return Err("a decimal has at most 12 integer digits".into());
                }
                point = Some(self.i);
                self.i += 1;
            } else {
                break;
            }
            let len = self.i - start;
            if point.is_none() && len > 15 {
                return Err("an integer has at most 15 digits".into());
            }
            if point.is_some() && len > 16 {
                return Err("a decimal has at most 16 characters".into());
            }
        }
        let text = std::str::from_utf8(&self.s[start..self.i]).expect("ASCII");
        match point {
            None => {
                let v: i64 = text.parse().map_err(|e| format!("{e}"))?;
                Ok(Bare::Integer(if negative { -v } else { v }))
            }
            Some(p) => {
                let fraction = self.i - p - 1;
                if fraction == 0 || fraction > 3 {
                    return Err("a decimal has 1 to 3 fractional digits".into());
                }
                let v: f64 = text.parse().map_err(|e| format!("{e}"))?;
                Ok(Bare::Decimal(if negative { -v } else { v }))
            }
        }
    }

    fn string(&mut self) -> Result<Bare, String> {
        self.expect(b'"')?;
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err("unterminated string".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Bare::String(out));
                }
                Some(b'\\') => {
                    self.i += 1;
                    match self.peek() {
                        Some(c @ (b'"' | b'\\')) => out.push(c as char),
                        _ => return Err("only \\\" and \\\\ are escapes".into()),
                    }
                    self.i += 1;
                }
                Some(c @ 0x20..=0x7e) => {
                    out.push(c as char);
                    self.i += 1;
                }
                Some(c) => return Err(format!("byte {c:#x} in a string")),
            }
        }
    }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_draft_examples_and_refuses_what_the_rfc_refuses() {
        let list = parse_list(r#""burst";q=10;w=1, "queries";q=4;qu="concurrent-requests""#).unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].bare, Bare::String("burst".into()));
        assert_eq!(list[0].param("q"), Some(&Bare::Integer(10)));
        assert_eq!(list[1].param("qu"), Some(&Bare::String("concurrent-requests".into())));
        assert_eq!(parse_list("").unwrap(), vec![]);
        assert_eq!(parse_list("a;b, ?0, 1.5, -2").unwrap().len(), 4);
        for bad in [
            r#""a";q=1000000000000000"#,
            r#""a","#,
            r#""a"x"#,
            r#""a;q=1"#,
            r#""a";Q=1"#,
            "1.2345",
            "\"\u{e9}\"",
            r#""a\n""#,
        ] {
            assert!(parse_list(bad).is_err(), "{bad}");
        }
        assert!(parse_list(r#""a";q=999999999999999"#).is_ok());
    }
}
