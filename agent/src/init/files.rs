//! Files and directories with the owner and mode the packaged service expects, and the
//! service user's ids.
//!
//! A file is written to a temporary file that already has its final mode and owner, then
//! renamed over the old one: a key is never readable by others, not even for a moment, and
//! a reader sees either the old file or the new one.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;

use super::InitError;

/// The ids of root and of the service user, whose (primary) group may read the config
/// and keys.
#[derive(Debug, Clone)]
pub struct Owners {
    root: (u32, u32),
    service: (u32, u32),
    service_name: String,
}

impl Owners {
    /// root (0:0) and `user`, looked up in `passwd` (a system user such as `pantau` is a local
    /// user: the packages create it with adduser in postinst, so /etc/passwd has it).
    pub fn root_and(user: &str, passwd: &Path) -> Result<Owners, InitError> {
        let failed = |why: String| InitError::ServiceUser {
            user: user.to_owned(),
            why,
        };
        let text = std::fs::read_to_string(passwd)
            .map_err(|error| failed(format!("cannot read {}: {error}", passwd.display())))?;
        let service = lookup(&text, user).ok_or_else(|| {
            failed(format!(
                "no such user in {} (the pantau-agent package creates `pantau`)",
                passwd.display()
            ))
        })?;
        Ok(Owners {
            root: (0, 0),
            service,
            service_name: user.to_owned(),
        })
    }

    /// Given ids, for tests that cannot chown to root.
    #[cfg(test)]
    pub fn with_ids(root: (u32, u32), service: (u32, u32), service_name: &str) -> Owners {
        Owners {
            root,
            service,
            service_name: service_name.to_owned(),
        }
    }

    pub fn root(&self) -> (u32, u32) {
        self.root
    }

    pub fn service(&self) -> (u32, u32) {
        self.service
    }

    /// `root:root`, `root:pantau` or `pantau:pantau`, for the report.
    pub fn describe(&self, (uid, gid): (u32, u32)) -> String {
        let user = match uid == self.root.0 {
            true => "root",
            false => self.service_name.as_str(),
        };
        let group = match gid == self.root.1 {
            true => "root",
            false => self.service_name.as_str(),
        };
        format!("{user}:{group}")
    }
}

use pantau_runtime::owned_files::user_ids as lookup;

/// Creates `path` (and its parents) with `mode` and `owner` if it does not exist; an existing
/// directory keeps its owner and mode (the package may have made it so).
pub fn dir(path: &Path, mode: u32, (uid, gid): (u32, u32)) -> Result<(), InitError> {
    let failed = |source| InitError::Write {
        path: path.display().to_string(),
        source,
    };
    if path.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(path)
        .map_err(failed)?;
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(failed)?;
    // The umask may have taken bits away.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(failed)
}

/// Writes `text` to `path` with `mode` and `owner` (pantau_runtime::owned_files).
pub fn write(path: &Path, text: &str, mode: u32, (uid, gid): (u32, u32)) -> Result<(), InitError> {
    let ownership = pantau_runtime::owned_files::Ownership { uid, gid, mode };
    pantau_runtime::owned_files::install(path, text.as_bytes(), ownership).map_err(|source| {
        InitError::Write {
            path: path.display().to_string(),
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_user_is_found_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      pantau:x:998:997:Pantau:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(lookup(passwd, "pantau"), Some((998, 997)));
        assert_eq!(lookup(passwd, "panta"), None);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("passwd");
        std::fs::write(&file, passwd).unwrap();
        let error = Owners::root_and("nobody-here", &file)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--service-user nobody-here: no such user"),
            "{error}"
        );
    }
}
