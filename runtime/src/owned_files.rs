//! Files with an owner and a mode from their first byte, for the commands that install
//! secrets as root (`pantau-collector init`, `agent add`, `user`, `key derive`,
//! `pantau-agent init`) and for files the service rewrites itself.
//!
//! A file is written to a temporary file beside it that is created with its final mode, given
//! its owner with `fchown`, filled, synced, then renamed over the old one: a secret is never
//! readable by anyone else, not even for a moment, and a reader or a crash sees either the old
//! file or the new one.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// A file's owner, group and permission bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ownership {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Ownership {
    /// The owner, group and mode `path` has now, if it exists.
    pub fn of(path: &Path) -> Option<Ownership> {
        std::fs::metadata(path).ok().map(|old| Ownership {
            uid: old.uid(),
            gid: old.gid(),
            mode: old.mode() & 0o7777,
        })
    }
}

/// Writes `contents` to `path` with `ownership` (see the module header).
pub fn install(path: &Path, contents: &[u8], ownership: Ownership) -> std::io::Result<()> {
    let mut temp_name = path.as_os_str().to_owned();
    temp_name.push(".pantau-new");
    let temp = PathBuf::from(temp_name);
    let _ = std::fs::remove_file(&temp);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(ownership.mode)
            .open(&temp)?;
        // The umask may have taken bits away from the mode asked for.
        file.set_permissions(std::fs::Permissions::from_mode(ownership.mode))?;
        std::os::unix::fs::fchown(&file, Some(ownership.uid), Some(ownership.gid))?;
        file.write_all(contents)?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })
}

/// The numeric id (third field) of `name` in passwd(5) or group(5) text.
pub fn id_in(text: &str, name: &str) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

/// The user id and primary group id of `user` in passwd(5) text. Package-made system users
/// are local, so /etc/passwd has them; users known only through NSS (LDAP) are not found.
pub fn user_ids(passwd: &str, user: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == user).then_some(())?;
        let uid = fields.nth(1)?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_installed_file_has_its_mode_and_owner_and_no_temp_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let me = Ownership::of(dir.path()).unwrap();
        let wanted = Ownership { mode: 0o640, ..me };
        install(&path, b"one", wanted).unwrap();
        install(&path, b"two", wanted).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(Ownership::of(&path), Some(wanted));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn ids_are_read_from_passwd_and_group_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\npantau:x:998:997::/var/lib/pantau:/usr/sbin/nologin\n";
        assert_eq!(id_in(passwd, "pantau"), Some(998));
        assert_eq!(id_in(passwd, "pant"), None);
        assert_eq!(id_in("mosquitto:x:112:\n", "mosquitto"), Some(112));
        assert_eq!(user_ids(passwd, "pantau"), Some((998, 997)));
        assert_eq!(user_ids(passwd, "root"), Some((0, 0)));
        assert_eq!(user_ids(passwd, "nobody"), None);
    }
}
