//! An ESB's (and EI's) analytics publishers: ESB 5.0.0 ships
//! `repository/deployment/server/eventpublishers/MessageFlowConfigurationPublisher.xml`
//! and `MessageFlowStatisticsPublisher.xml`, each an `<eventPublisher>`
//! whose `<to eventAdapterType="wso2event">` holds `<property
//! name="receiverURL">tcp://localhost:7612</property>` and `authURL`
//! (ssl 7712), and `protocol` (`thrift`, or `binary` for 9611/9711).

use std::path::Path;

use super::apim::UrlSetting;
use super::error::ScanError;
use super::xml::parse_xml;

pub(crate) fn read_event_publisher(file: &Path, text: &str) -> Result<Vec<UrlSetting>, ScanError> {
    let root = parse_xml(file, text)?;
    let Some(to) = root
        .child("to")
        .filter(|t| t.attr("eventAdapterType") == Some("wso2event"))
    else {
        return Ok(Vec::new());
    };
    let prop = |name: &str| {
        to.children
            .iter()
            .find(|p| p.name == "property" && p.attr("name") == Some(name))
    };
    let binary = prop("protocol").is_some_and(|p| p.text.eq_ignore_ascii_case("binary"));
    let (plain, ssl) = if binary {
        ("binary", "binary-ssl")
    } else {
        ("thrift", "thrift-ssl")
    };
    let mut out = Vec::new();
    for (key, name) in [("receiverURL", plain), ("authURL", ssl)] {
        if let Some(p) = prop(key).filter(|p| !p.text.is_empty()) {
            out.push(UrlSetting {
                name,
                setting: format!("eventPublisher {} {key}", root.attr("name").unwrap_or("")),
                value: p.setting(),
            });
        }
    }
    Ok(out)
}
