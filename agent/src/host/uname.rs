//! node_exporter's `uname` collector: `node_uname_info`, the six fields of uname(2) as labels
//! and the value 1.

use pantau_protocol::Family;

use super::{CollectError, FamilyBuilder};

/// The `uname` collector. It reads uname(2) every round, as node_exporter does, because the
/// node name can change while the agent runs.
pub struct Uname;

/// uname(2)'s fields, as node_exporter labels them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnameFields {
    pub sysname: String,
    pub release: String,
    pub version: String,
    pub machine: String,
    pub nodename: String,
    pub domainname: String,
}

impl Uname {
    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let uname = rustix::system::uname();
        let text = |value: &std::ffi::CStr| value.to_string_lossy().into_owned();
        let fields = UnameFields {
            sysname: text(uname.sysname()),
            release: text(uname.release()),
            version: text(uname.version()),
            machine: text(uname.machine()),
            nodename: text(uname.nodename()),
            domainname: text(uname.domainname()),
        };
        Ok(vec![family(&fields)])
    }
}

pub fn family(fields: &UnameFields) -> Family {
    let mut info = FamilyBuilder::gauge(
        "node_uname_info",
        "Labeled system information as provided by the uname system call.",
    );
    info.sample(
        &[
            ("sysname", &fields.sysname),
            ("release", &fields.release),
            ("version", &fields.version),
            ("machine", &fields.machine),
            ("nodename", &fields.nodename),
            ("domainname", &fields.domainname),
        ],
        1.0,
    );
    info.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_node_exporters() {
        let family = family(&UnameFields {
            sysname: "Linux".to_owned(),
            release: "6.1.0-18-amd64".to_owned(),
            version: "#1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1".to_owned(),
            machine: "x86_64".to_owned(),
            nodename: "dc-srv-01".to_owned(),
            domainname: "(none)".to_owned(),
        });
        let labels: Vec<_> = family.samples[0]
            .labels
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            labels,
            [
                "domainname",
                "machine",
                "nodename",
                "release",
                "sysname",
                "version"
            ]
        );
        assert_eq!(family.samples[0].value, 1.0);
    }

    #[test]
    fn reads_this_machine() {
        let families = Uname.collect().unwrap();
        assert_eq!(families[0].samples[0].labels["sysname"], "Linux");
    }
}
