//! The one way this crate flattens an error and its causes into a line
//! (for log fields, report details and error replies): at the bottom of the
//! layers, so every module that needs it can import it.

/// An error and its sources, joined with ": ", each cause once.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn each_cause_is_named_once() {
        let e = Outer(std::io::Error::from(std::io::ErrorKind::AddrInUse));
        assert_eq!(error_chain(&e), "outer: address in use");
    }
}
