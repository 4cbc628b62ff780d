//! The mount table, as node_exporter's `filesystem` collector reads it: `/proc/<pid>/mounts`
//! lines with their octal escapes decoded, and mount points made relative to `--path.rootfs`.

use std::path::Path;

/// One line of `/proc/<pid>/mounts`, with the mount point's octal escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub device: String,
    pub mount_point: String,
    pub fs_type: String,
    pub options: String,
}

/// Parses `/proc/<pid>/mounts` (fstab(5) format). Like node_exporter, a line with fewer than four
/// fields fails the whole read rather than reporting a partial list.
pub fn parse_mounts(text: &str) -> Result<Vec<MountEntry>, String> {
    let mut mounts = Vec::new();
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [device, mount_point, fs_type, options, ..] = fields[..] else {
            return Err(format!("malformed mount point information: '{line}'"));
        };
        mounts.push(MountEntry {
            device: device.to_owned(),
            mount_point: unescape_octal(mount_point),
            fs_type: fs_type.to_owned(),
            options: options.to_owned(),
        });
    }
    Ok(mounts)
}

/// Decodes the `\ooo` escapes the kernel writes for space, tab, newline and backslash in mount
/// points (`/mnt/my\040disk`). node_exporter decodes only `\040` and `\011`; the others are
/// rarer still and decoded too, since the escaped path cannot be passed to statvfs.
fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let digits = bytes.get(i + 1..i + 4).filter(|digits| {
            bytes[i] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match digits {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0_u32, |value, digit| value * 8 + u32::from(digit - b'0'));
                // Three octal digits can exceed a byte (\777); such text is kept as it is.
                match u8::try_from(value) {
                    Ok(byte) => decoded.push(byte),
                    Err(_) => decoded.extend_from_slice(&bytes[i..i + 4]),
                }
                i += 4;
            }
            None => {
                decoded.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// The mount point as node_exporter reports it with `--path.rootfs`: relative to the rootfs,
/// so `/host/home` reads `/home` and `/host` itself reads `/`. Mounts outside the rootfs (the
/// agent's own, in a container) keep their path. Unlike node_exporter's plain prefix trim, only
/// whole path components are stripped: `/hostile` is not under `/host`.
pub fn strip_rootfs(mount_point: &str, rootfs: &Path) -> String {
    let rootfs = rootfs.to_string_lossy();
    let rootfs = rootfs.trim_end_matches('/');
    if rootfs.is_empty() {
        return mount_point.to_owned();
    }
    match mount_point.strip_prefix(rootfs) {
        Some("") => "/".to_owned(),
        Some(rest) if rest.starts_with('/') => rest.to_owned(),
        _ => mount_point.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mounts_and_decodes_escapes() {
        let text = "/dev/vda / ext4 rw,relatime 0 0\n\n\
                    //srv/share /mnt/my\\040disk\\011x\\134y cifs ro 0 0\n";
        let mounts = parse_mounts(text).unwrap();
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[0].device, "/dev/vda");
        assert_eq!(mounts[1].mount_point, "/mnt/my disk\tx\\y");
        assert_eq!(
            (mounts[1].fs_type.as_str(), mounts[1].options.as_str()),
            ("cifs", "ro")
        );
        assert!(parse_mounts("/dev/vda / ext4\n").is_err());
    }

    #[test]
    fn unescape_leaves_other_backslashes() {
        assert_eq!(unescape_octal(r"a\040b"), "a b");
        assert_eq!(unescape_octal(r"a\09b\\c\"), r"a\09b\\c\");
        assert_eq!(unescape_octal(r"\777"), r"\777");
    }

    #[test]
    fn mount_points_are_relative_to_the_rootfs() {
        let host = Path::new("/host/");
        assert_eq!(strip_rootfs("/host", host), "/");
        assert_eq!(strip_rootfs("/host/home", host), "/home");
        assert_eq!(strip_rootfs("/hostile", host), "/hostile");
        assert_eq!(strip_rootfs("/etc/hosts", host), "/etc/hosts");
        assert_eq!(strip_rootfs("/home", Path::new("/")), "/home");
    }
}
