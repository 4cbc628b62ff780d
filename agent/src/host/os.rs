//! node_exporter's `os` collector: `node_os_info` with os-release's identifying fields as
//! labels, and `node_os_version` with the numeric major.minor of `VERSION_ID`. It reads
//! `etc/os-release`, else `usr/lib/os-release`, under the root file system path.

use std::collections::BTreeMap;
use std::path::PathBuf;

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder, Paths};

/// os-release keys and the label node_exporter gives each, in its order.
const LABELS: [(&str, &str); 12] = [
    ("BUILD_ID", "build_id"),
    ("ID", "id"),
    ("ID_LIKE", "id_like"),
    ("IMAGE_ID", "image_id"),
    ("IMAGE_VERSION", "image_version"),
    ("NAME", "name"),
    ("PRETTY_NAME", "pretty_name"),
    ("VARIANT", "variant"),
    ("VARIANT_ID", "variant_id"),
    ("VERSION", "version"),
    ("VERSION_CODENAME", "version_codename"),
    ("VERSION_ID", "version_id"),
];

/// The `os` collector.
pub struct Os {
    candidates: [PathBuf; 2],
}

impl Os {
    pub fn new(paths: &Paths) -> Self {
        Self {
            candidates: [
                paths.rootfs.join("etc/os-release"),
                paths.rootfs.join("usr/lib/os-release"),
            ],
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let mut last = None;
        for path in &self.candidates {
            match CollectError::read_text(path) {
                Ok(text) => return Ok(families(&parse_os_release(&text))),
                Err(CollectError::NoData(why)) => last = Some(why),
                Err(error) => return Err(error),
            }
        }
        Err(CollectError::NoData(last.unwrap_or_default()))
    }
}

/// `KEY=value` lines; values may be quoted with `"` or `'`, and `\` escapes the next character
/// inside them (os-release(5)). Comments and blank lines are skipped.
pub fn parse_os_release(text: &str) -> BTreeMap<String, String> {
    let mut fields = BTreeMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        fields.insert(key.trim().to_owned(), unquote(value.trim()));
    }
    fields
}

fn unquote(value: &str) -> String {
    let quote = value.chars().next();
    let inner = match quote {
        Some(q @ ('"' | '\'')) if value.len() >= 2 && value.ends_with(q) => {
            &value[1..value.len() - 1]
        }
        _ => value,
    };
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    out
}

/// node_exporter's version: the leading `^[0-9]+\.?[0-9]*` of `VERSION_ID` as a number, 0
/// when it has none (rolling releases).
pub fn version_number(version_id: &str) -> f64 {
    let digits = version_id
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(version_id.len());
    if digits == 0 {
        return 0.0;
    }
    let mut end = digits;
    if version_id[end..].starts_with('.') {
        end += 1;
        end += version_id[end..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(version_id.len() - end);
    }
    version_id[..end]
        .trim_end_matches('.')
        .parse()
        .unwrap_or(0.0)
}

pub fn families(fields: &BTreeMap<String, String>) -> Vec<Family> {
    let get = |key: &str| fields.get(key).map_or("", String::as_str);
    let labels: Vec<(&str, &str)> = LABELS
        .iter()
        .map(|(key, label)| (*label, get(key)))
        .collect();
    let mut info = FamilyBuilder::gauge(
        "node_os_info",
        "A metric with a constant '1' value labeled by build_id, id, id_like, image_id, \
         image_version, name, pretty_name, variant, variant_id, version, version_codename, \
         version_id.",
    );
    info.sample(&labels, 1.0);
    let mut version = FamilyBuilder::gauge(
        "node_os_version",
        "Metric containing the major.minor part of the OS version.",
    );
    version.sample(
        &[
            ("id", get("ID")),
            ("id_like", get("ID_LIKE")),
            ("name", get("NAME")),
        ],
        version_number(get("VERSION_ID")),
    );
    vec![info.build(), version.build()]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn reads_debians_os_release() {
        let testdata = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata");
        let paths = Paths {
            proc: testdata.join("proc"),
            rootfs: testdata.clone(),
            sys: testdata.join("sys"),
        };
        let families = Os::new(&paths).collect().unwrap();
        let info = &families[0].samples[0].labels;
        assert_eq!(info["pretty_name"], "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(info["version_codename"], "bookworm");
        assert_eq!(info["build_id"], "");
        assert_eq!(info.len(), 12);
        assert_eq!(families[1].samples[0].value, 12.0);
        assert_eq!(families[1].samples[0].labels["id"], "debian");
    }

    #[test]
    fn versions_are_major_minor() {
        assert_eq!(version_number("22.04"), 22.04);
        assert_eq!(version_number("3.19.1"), 3.19);
        assert_eq!(version_number("12"), 12.0);
        assert_eq!(version_number("rolling"), 0.0);
        assert_eq!(version_number(""), 0.0);
    }

    #[test]
    fn quotes_and_escapes() {
        let fields = parse_os_release("# c\nNAME='Ubuntu'\nX=\"a \\\"b\\\"\"\nY=plain\n\n");
        assert_eq!(fields["NAME"], "Ubuntu");
        assert_eq!(fields["X"], "a \"b\"");
        assert_eq!(fields["Y"], "plain");
    }
}
