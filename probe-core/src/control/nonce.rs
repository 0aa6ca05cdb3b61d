//! A canary nonce as the control messages carry it: on the wire the text
//! the prober sent (`PORTCALL <round> <nonce>`), in memory 16 bytes when it
//! is what portcall makes, 32 lowercase hex digits (a random half and its
//! tag under the round's key, or 32 random digits). A coordinator holds
//! two per path (the prober's and the target canary's sighting), so in a
//! 100-host round of 99,000 paths the text on the heap (a 32-byte string
//! in a 48-byte allocation, plus its pointer) cost it about 8 MiB more.
//! Any other text a peer sends is kept as it came.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A nonce: equal, ordered and shown exactly as its text would be (of
/// two compact nonces, the byte order is the text's order; every compact
/// nonce sorts before any other text, which is a total order all the
/// same, and the only one the join needs).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Nonce {
    /// 32 lowercase hex digits, as the 16 bytes they spell.
    Hex([u8; 16]),
    /// Any other text.
    Text(Box<str>),
}

impl Nonce {
    /// The nonce whose text is `s`.
    pub fn new(s: &str) -> Nonce {
        let b = s.as_bytes();
        let digit = |c: u8| match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        };
        if b.len() == 32 {
            let mut out = [0u8; 16];
            let all = out.iter_mut().enumerate().all(|(i, o)| {
                match (digit(b[2 * i]), digit(b[2 * i + 1])) {
                    (Some(h), Some(l)) => {
                        *o = h << 4 | l;
                        true
                    }
                    _ => false,
                }
            });
            if all {
                return Nonce::Hex(out);
            }
        }
        Nonce::Text(s.into())
    }

    /// Whether its text is `s`, without writing it out.
    pub fn is(&self, s: &str) -> bool {
        match self {
            Nonce::Text(t) => **t == *s,
            Nonce::Hex(_) => s.len() == 32 && *self == Nonce::new(s),
        }
    }
}

impl fmt::Display for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Nonce::Hex(b) => b.iter().try_for_each(|b| write!(f, "{b:02x}")),
            Nonce::Text(t) => f.write_str(t),
        }
    }
}

impl fmt::Debug for Nonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl From<&str> for Nonce {
    fn from(s: &str) -> Nonce {
        Nonce::new(s)
    }
}

impl From<String> for Nonce {
    fn from(s: String) -> Nonce {
        Nonce::new(&s)
    }
}

impl PartialEq<str> for Nonce {
    fn eq(&self, s: &str) -> bool {
        self.is(s)
    }
}

impl PartialEq<&str> for Nonce {
    fn eq(&self, s: &&str) -> bool {
        self.is(s)
    }
}

impl Serialize for Nonce {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Nonce::Text(t) => s.serialize_str(t),
            Nonce::Hex(_) => s.collect_str(self),
        }
    }
}

impl<'de> Deserialize<'de> for Nonce {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Nonce, D::Error> {
        struct Visit;
        impl serde::de::Visitor<'_> for Visit {
            type Value = Nonce;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a nonce (a string)")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Nonce, E> {
                Ok(Nonce::new(s))
            }
        }
        d.deserialize_str(Visit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn portcalls_nonces_are_compact_and_read_back_as_their_text() {
        let text = "0123456789abcdef00ff7e10c0ffee99";
        let n = Nonce::new(text);
        assert!(matches!(n, Nonce::Hex(_)), "{n:?}");
        assert_eq!(n.to_string(), text);
        assert_eq!(format!("{n:?}"), format!("{text:?}"));
        assert!(n.is(text) && n == text);
        assert!(!n.is("0123456789abcdef00ff7e10c0ffee98"));
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<Nonce>(&json).unwrap(), n);
        assert_eq!(std::mem::size_of::<Nonce>(), 24);
        assert_eq!(std::mem::size_of::<Option<Nonce>>(), 24);
    }

    #[test]
    fn other_text_is_kept_as_it_came() {
        for text in [
            "0123456789ABCDEF00FF7E10C0FFEE99", // upper case: another text
            "0011",
            "0123456789abcdef00ff7e10c0ffee9",   // 31 digits
            "0123456789abcdef00ff7e10c0ffee99a", // 33
            "0123456789abcdef00ff7e10c0ffeeg9",
            "",
        ] {
            let n = Nonce::new(text);
            assert!(matches!(n, Nonce::Text(_)), "{text}");
            assert_eq!(n.to_string(), text);
            assert!(n.is(text));
            let json = serde_json::to_string(&n).unwrap();
            assert_eq!(serde_json::from_str::<Nonce>(&json).unwrap(), n);
        }
        assert_ne!(
            Nonce::new("0123456789ABCDEF00FF7E10C0FFEE99"),
            Nonce::new("0123456789abcdef00ff7e10c0ffee99")
        );
    }

    #[test]
    fn compact_nonces_sort_as_their_text() {
        let mut texts = [
            "ff000000000000000000000000000000",
            "0f000000000000000000000000000000",
            "00000000000000000000000000000001",
            "a0000000000000000000000000000000",
        ];
        let mut nonces: Vec<Nonce> = texts.iter().map(|t| Nonce::new(t)).collect();
        texts.sort_unstable();
        nonces.sort();
        let back: Vec<String> = nonces.iter().map(Nonce::to_string).collect();
        assert_eq!(back, texts);
    }
}
