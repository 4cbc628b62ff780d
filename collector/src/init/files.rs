//! Installing files with an owner and a mode from the start: each file is written to a temp
//! file created with its final mode, given its owner with `fchown`, synced, then renamed into
//! place, so a secret is never readable by anyone else, not even for a moment, and a crash
//! leaves either the old file or the new one.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a file could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{what} '{name}' does not exist on this system ({file}); {hint}")]
    NoSuchAccount {
        what: &'static str,
        name: String,
        file: &'static str,
        hint: &'static str,
    },
    #[error("cannot write '{path}': {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub use pantau_runtime::owned_files::Ownership;
use pantau_runtime::owned_files::id_in as id_of;

/// The numeric ids of the users and groups `init` installs files for.
#[derive(Debug, Clone, Copy)]
pub struct Ids {
    pub root: (u32, u32),
    /// The service user and its group (of the same name).
    pub service: (u32, u32),
    /// The group Mosquitto reads its files as.
    pub mosquitto_group: u32,
}

impl Ids {
    /// Looks the names up in /etc/passwd and /etc/group.
    pub fn look_up(service_user: &str, mosquitto_group: &str) -> Result<Self, FileError> {
        let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
        let group = std::fs::read_to_string("/etc/group").unwrap_or_default();
        let service_uid = id_of(&passwd, service_user).ok_or(FileError::NoSuchAccount {
            what: "--service-user",
            name: service_user.to_owned(),
            file: "/etc/passwd",
            hint: "the pantau-collector package creates user pantau; give --service-user",
        })?;
        let service_gid = id_of(&group, service_user).ok_or(FileError::NoSuchAccount {
            what: "the group of --service-user",
            name: service_user.to_owned(),
            file: "/etc/group",
            hint: "the service user needs a group of its own name",
        })?;
        let mosquitto_gid = id_of(&group, mosquitto_group).ok_or(FileError::NoSuchAccount {
            what: "--mosquitto-group",
            name: mosquitto_group.to_owned(),
            file: "/etc/group",
            hint: "install the mosquitto package first, or give --mosquitto-group",
        })?;
        Ok(Ids {
            root: (0, 0),
            service: (service_uid, service_gid),
            mosquitto_group: mosquitto_gid,
        })
    }

    /// root:root with `mode`.
    pub fn root(&self, mode: u32) -> Ownership {
        Ownership {
            uid: self.root.0,
            gid: self.root.1,
            mode,
        }
    }

    /// root:<service group> with `mode`: the service reads, only root writes.
    pub fn root_service(&self, mode: u32) -> Ownership {
        Ownership {
            uid: self.root.0,
            gid: self.service.1,
            mode,
        }
    }

    /// <service user>:<service group> with `mode`: the service writes.
    pub fn service(&self, mode: u32) -> Ownership {
        Ownership {
            uid: self.service.0,
            gid: self.service.1,
            mode,
        }
    }

    /// root:<mosquitto group> with `mode`: Mosquitto reads after dropping privileges.
    pub fn root_mosquitto(&self, mode: u32) -> Ownership {
        Ownership {
            uid: self.root.0,
            gid: self.mosquitto_group,
            mode,
        }
    }
}

/// Writes `contents` to `path` with `ownership` (see the module header).
pub fn install(path: &Path, contents: &[u8], ownership: Ownership) -> Result<(), FileError> {
    pantau_runtime::owned_files::install(path, contents, ownership).map_err(|source| {
        FileError::Write {
            path: path.to_owned(),
            source,
        }
    })
}

/// Makes `path` (and missing parents, as root 0755) a directory with `ownership`.
pub fn directory(path: &Path, ownership: Ownership) -> Result<(), FileError> {
    let error = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    if let Some(parent) = path.parent()
        && !parent.as_os_str().is_empty()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(error)?;
    }
    match std::fs::DirBuilder::new().mode(ownership.mode).create(path) {
        Ok(()) => {}
        Err(source) if source.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => return Err(error(source)),
    }
    std::os::unix::fs::chown(path, Some(ownership.uid), Some(ownership.gid)).map_err(error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(ownership.mode)).map_err(error)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn a_missing_service_user_is_named() {
        let error = Ids::look_up("no-such-user-pantau", "root").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("--service-user 'no-such-user-pantau' does not exist"),
            "{error}"
        );
    }

    #[test]
    fn installs_with_the_mode_and_owner_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/secret");
        let uid = std::fs::metadata(dir.path()).unwrap().uid();
        let gid = std::fs::metadata(dir.path()).unwrap().gid();
        let owner = |mode| Ownership { uid, gid, mode };
        directory(&dir.path().join("sub"), owner(0o750)).unwrap();
        install(&path, b"one", owner(0o640)).unwrap();
        install(&path, b"two", owner(0o600)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let metadata = std::fs::metadata(&path).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o600);
        assert_eq!((metadata.uid(), metadata.gid()), (uid, gid));
        let metadata = std::fs::metadata(dir.path().join("sub")).unwrap();
        assert_eq!(metadata.mode() & 0o7777, 0o750);
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1,
            "no temp left"
        );
    }
}
