//! Reading a [`Response`] without buffering it. Derived, an internally
//! tagged enum (`{"reply": "probed", ...}`) is read whole into serde's
//! generic content tree first, to find its tag, and only then into the
//! variant's struct: a 100-host mesh's coordinator did that for every
//! agent's probe reply (a thousand paths) and evidence reply, holding each
//! reply three times over and spending as long again on the copy. Every
//! agent writes the tag first (serde serializes it first), so the tag is
//! read, then the rest of the same object straight into the variant's
//! struct; an object whose tag comes later is read into a JSON map first,
//! as before.

use std::fmt;

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use super::messages::{
    ErrorReply, EvidenceReply, HelloReply, PrepareReply, ProbeReply, RenewReply, Response,
    RoundRef, SourcesTraced, StateReply,
};

/// The tags, as `#[serde(tag = "reply", rename_all = "kebab-case")]` names
/// the variants.
const REPLIES: &[&str] = &[
    "hello",
    "prepared",
    "probed",
    "evidence",
    "torn-down",
    "renewed",
    "sources-traced",
    "error",
    "state",
];

impl<'de> Deserialize<'de> for Response {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Response, D::Error> {
        d.deserialize_map(ReplyVisitor)
    }
}

struct ReplyVisitor;

impl<'de> Visitor<'de> for ReplyVisitor {
    type Value = Response;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reply object with its `reply` tag")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Response, A::Error> {
        let Some(first) = map.next_key::<String>()? else {
            return Err(de::Error::missing_field("reply"));
        };
        if first == "reply" {
            let tag: String = map.next_value()?;
            return body(&tag, MapAccessDeserializer::new(map));
        }
        // The tag elsewhere: the object as a map, then its body.
        let mut object = serde_json::Map::new();
        object.insert(first, map.next_value()?);
        while let Some((k, v)) = map.next_entry::<String, serde_json::Value>()? {
            object.insert(k, v);
        }
        let tag = match object.remove("reply") {
            Some(serde_json::Value::String(tag)) => tag,
            Some(_) => return Err(de::Error::custom("`reply` is not a string")),
            None => return Err(de::Error::missing_field("reply")),
        };
        body(&tag, serde_json::Value::Object(object)).map_err(de::Error::custom)
    }
}

/// The variant `tag` names, its fields read from `d`.
fn body<'de, D: Deserializer<'de>>(tag: &str, d: D) -> Result<Response, D::Error> {
    Ok(match tag {
        "hello" => Response::Hello(HelloReply::deserialize(d)?),
        "prepared" => Response::Prepared(PrepareReply::deserialize(d)?),
        "probed" => Response::Probed(ProbeReply::deserialize(d)?),
        "evidence" => Response::Evidence(EvidenceReply::deserialize(d)?),
        "torn-down" => Response::TornDown(RoundRef::deserialize(d)?),
        "renewed" => Response::Renewed(RenewReply::deserialize(d)?),
        "sources-traced" => Response::SourcesTraced(SourcesTraced::deserialize(d)?),
        "error" => Response::Error(ErrorReply::deserialize(d)?),
        "state" => Response::State(StateReply::deserialize(d)?),
        other => return Err(de::Error::unknown_variant(other, REPLIES)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Response` as serde derives its reader: what the hand-written one
    /// must agree with.
    #[derive(serde::Deserialize)]
    #[serde(tag = "reply", rename_all = "kebab-case")]
    enum Derived {
        Hello(HelloReply),
        Prepared(PrepareReply),
        Probed(ProbeReply),
        Evidence(EvidenceReply),
        TornDown(RoundRef),
        Renewed(RenewReply),
        SourcesTraced(SourcesTraced),
        Error(ErrorReply),
        State(StateReply),
    }

    impl From<Derived> for Response {
        fn from(d: Derived) -> Response {
            match d {
                Derived::Hello(r) => Response::Hello(r),
                Derived::Prepared(r) => Response::Prepared(r),
                Derived::Probed(r) => Response::Probed(r),
                Derived::Evidence(r) => Response::Evidence(r),
                Derived::TornDown(r) => Response::TornDown(r),
                Derived::Renewed(r) => Response::Renewed(r),
                Derived::SourcesTraced(r) => Response::SourcesTraced(r),
                Derived::Error(r) => Response::Error(r),
                Derived::State(r) => Response::State(r),
            }
        }
    }

    #[test]
    fn replies_read_as_the_derived_reader_reads_them() {
        let probed = r#"{"reply":"probed","round":"ab","results":[{"path":3,"nonce":"n1","observed":"open","detail":"exchanged","latency_us":120,"attempts":1,"source":"198.18.0.1:4000"},{"path":4,"observed":"timeout","detail":"","latency_us":0,"attempts":2}]}"#;
        let evidence = r#"{"reply":"evidence","round":"ab","canaries":[{"port":20000,"seen":[{"nonce":"n1","source":"198.18.0.1:4000"}],"strays":0,"dropped":1}],"handshakes":[]}"#;
        let ok = [
            r#"{"reply":"hello","host":"a","plan":"p","plan_digest":"d","version":2}"#,
            r#"{"reply":"prepared","round":"ab","listeners":[]}"#,
            probed,
            evidence,
            r#"{"reply":"torn-down","round":"ab"}"#,
            // The tag after the fields, and unknown fields: as derived.
            r#"{"round":"ab","reply":"torn-down"}"#,
            r#"{"round":"ab","results":[],"reply":"probed"}"#,
            r#"{"reply":"renewed","round":"ab","lease_ms":5}"#,
            r#"{"reply":"error","message":"x","extra":[1,{"a":null}]}"#,
            r#"{"reply":"sources-traced","round":"ab","pairs":3,"forwarded":0}"#,
            r#"{"reply":"state","host":"h","interfaces":[],"routes":[],"forwarding":false,"listening":[]}"#,
        ];
        for text in ok {
            let derived: Response = serde_json::from_str::<Derived>(text)
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .into();
            let read: Response =
                serde_json::from_str(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(read, derived, "{text}");
            // And what a reply is written as reads back as itself.
            let again = serde_json::to_string(&read).unwrap();
            assert_eq!(serde_json::from_str::<Response>(&again).unwrap(), read);
        }
        let Response::Probed(p) = serde_json::from_str(probed).unwrap() else {
            panic!("not a probe reply");
        };
        assert_eq!(p.results.len(), 2);
        let bad = [
            r#"{"reply":"format-disk"}"#,
            r#"{}"#,
            r#"{"round":"ab"}"#,
            r#"{"reply":3,"round":"ab"}"#,
            r#"{"reply":"torn-down"}"#,
            r#"{"round":7,"reply":"torn-down"}"#,
            r#"[]"#,
            r#""torn-down""#,
            r#"{"reply":"probed","round":"ab","results":[{"path":"x"}]}"#,
        ];
        for text in bad {
            assert!(serde_json::from_str::<Derived>(text).is_err(), "{text}");
            assert!(serde_json::from_str::<Response>(text).is_err(), "{text}");
        }
    }
}
