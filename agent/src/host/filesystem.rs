//! node_exporter's `filesystem` collector: size, free and available bytes, inodes and the
//! read-only flag of every mounted file system the exclude patterns let through, from
//! statvfs(2), labelled `device`, `fstype` and `mountpoint` as node_exporter labels them.
//!
//! statvfs runs with a timeout (see [`statfs`]): a dead NFS mount is reported as
//! `node_filesystem_device_error 1` instead of hanging the collector.

mod mounts;
mod statfs;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::time::Duration;

use pantau_protocol::Family;
use pantau_runtime::config::ConfigError;
use serde::Deserialize;
use tracing::debug;

use self::mounts::{MountEntry, parse_mounts, strip_rootfs};
use self::statfs::{TimedStatfs, statvfs_usage};
use super::{CollectError, FamilyBuilder, Paths, Pattern};

/// `[host.filesystem]`: which mounts to report and how long to wait for each.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemConfig {
    /// Regular expression of mount points to skip, matched anywhere in the mount point as
    /// reported (relative to `host.rootfs_path`); node_exporter's
    /// `--collector.filesystem.mount-points-exclude`. An empty string skips none. Default:
    /// node_exporter's, `^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`.
    #[serde(default = "default_mount_points_exclude")]
    pub mount_points_exclude: Pattern,
    /// Regular expression of file system types to skip; node_exporter's
    /// `--collector.filesystem.fs-types-exclude`. An empty string skips none. Default:
    /// node_exporter's list of pseudo file systems (proc, sysfs, cgroup, overlay, squashfs ...).
    #[serde(default = "default_fs_types_exclude")]
    pub fs_types_exclude: Pattern,
    /// How long to wait for statvfs(2) on one mount before treating it as stuck and skipping it
    /// until the call returns; node_exporter's `--collector.filesystem.mount-timeout`.
    /// Between 1 and 3600. Default: 5.
    #[serde(default = "default_statfs_timeout_seconds")]
    pub statfs_timeout_seconds: u64,
}

/// node_exporter 1.5's Linux default for `--collector.filesystem.mount-points-exclude`.
const MOUNT_POINTS_EXCLUDE: &str =
    "^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)";

/// node_exporter 1.5's Linux default for `--collector.filesystem.fs-types-exclude`.
const FS_TYPES_EXCLUDE: &str = "^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|\
devtmpfs|fusectl|hugetlbfs|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|\
securityfs|selinuxfs|squashfs|sysfs|tracefs)$";

const MAX_STATFS_TIMEOUT_SECONDS: u64 = 3600;

fn default_mount_points_exclude() -> Pattern {
    // A constant that compiles (tested below).
    Pattern::new(MOUNT_POINTS_EXCLUDE).unwrap_or_default()
}

fn default_fs_types_exclude() -> Pattern {
    Pattern::new(FS_TYPES_EXCLUDE).unwrap_or_default()
}

fn default_statfs_timeout_seconds() -> u64 {
    5
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            mount_points_exclude: default_mount_points_exclude(),
            fs_types_exclude: default_fs_types_exclude(),
            statfs_timeout_seconds: default_statfs_timeout_seconds(),
        }
    }
}

impl FilesystemConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        // Bounded above too: the deadline is `now + timeout`, which must not overflow.
        if !(1..=MAX_STATFS_TIMEOUT_SECONDS).contains(&self.statfs_timeout_seconds) {
            return Err(ConfigError::invalid(
                "host.filesystem.statfs_timeout_seconds",
                self.statfs_timeout_seconds,
                format!("must be between 1 and {MAX_STATFS_TIMEOUT_SECONDS}"),
            ));
        }
        Ok(())
    }
}

/// The `filesystem` collector.
pub struct Filesystem {
    /// `<proc>/1/mounts`, then `<proc>/self/mounts` for when PID 1 is hidden (hidepid).
    mount_files: [PathBuf; 2],
    rootfs: PathBuf,
    mount_points_exclude: Pattern,
    fs_types_exclude: Pattern,
    statfs: TimedStatfs,
}

/// The labels of one reported mount, in `device`, `fstype`, `mountpoint` order.
type Labels = [String; 3];

impl Filesystem {
    /// `config` must have passed `validate`.
    pub fn new(config: &FilesystemConfig, paths: &Paths) -> Self {
        let timeout = Duration::from_secs(config.statfs_timeout_seconds);
        Self {
            mount_files: [paths.proc.join("1/mounts"), paths.proc.join("self/mounts")],
            rootfs: paths.rootfs.clone(),
            mount_points_exclude: config.mount_points_exclude.clone(),
            fs_types_exclude: config.fs_types_exclude.clone(),
            statfs: TimedStatfs::new(timeout, statvfs_usage),
        }
    }

    pub fn collect(&mut self) -> Result<Vec<Family>, CollectError> {
        let mounts = self.select(self.read_mounts()?);
        let paths: Vec<PathBuf> = mounts
            .iter()
            .map(|([_, _, mount_point], _)| self.rootfs.join(mount_point.trim_start_matches('/')))
            .collect();
        let usages = self.statfs.stat_all(&paths);

        let gauge = FamilyBuilder::gauge;
        let mut size = gauge("node_filesystem_size_bytes", "Filesystem size in bytes.");
        let mut free = gauge(
            "node_filesystem_free_bytes",
            "Filesystem free space in bytes.",
        );
        let mut avail = gauge(
            "node_filesystem_avail_bytes",
            "Filesystem space available to non-root users in bytes.",
        );
        let mut files = gauge("node_filesystem_files", "Filesystem total file nodes.");
        let mut files_free = gauge(
            "node_filesystem_files_free",
            "Filesystem total free file nodes.",
        );
        let mut readonly = gauge("node_filesystem_readonly", "Filesystem read-only status.");
        let mut device_error = gauge(
            "node_filesystem_device_error",
            "Whether an error occurred while getting statistics for the given device.",
        );
        for (([device, fs_type, mount_point], read_only), usage) in mounts.iter().zip(usages) {
            let labels = [
                ("device", device.as_str()),
                ("fstype", fs_type.as_str()),
                ("mountpoint", mount_point.as_str()),
            ];
            device_error.sample(&labels, if usage.is_some() { 0.0 } else { 1.0 });
            // After an error node_exporter reports device_error alone, not even readonly.
            let Some(usage) = usage else { continue };
            size.sample(&labels, usage.size_bytes);
            free.sample(&labels, usage.free_bytes);
            avail.sample(&labels, usage.avail_bytes);
            files.sample(&labels, usage.files);
            files_free.sample(&labels, usage.files_free);
            readonly.sample(&labels, if *read_only { 1.0 } else { 0.0 });
        }
        Ok(
            [size, free, avail, files, files_free, readonly, device_error]
                .into_iter()
                .map(FamilyBuilder::build)
                .collect(),
        )
    }

    fn read_mounts(&self) -> Result<Vec<MountEntry>, CollectError> {
        let [pid1, own] = &self.mount_files;
        let (path, bytes) = match std::fs::read(pid1) {
            // PID 1's view is the host's; when it is hidden (hidepid) fall back to our own, as
            // node_exporter does. It falls back on NotFound only; hidepid=1 gives
            // PermissionDenied, which deserves the same fallback.
            Err(error)
                if matches!(
                    error.kind(),
                    ErrorKind::NotFound | ErrorKind::PermissionDenied
                ) =>
            {
                debug!(path = %pid1.display(), %error, "falling back to own mounts");
                let bytes = std::fs::read(own).map_err(|error| CollectError::io(own, error))?;
                (own, bytes)
            }
            result => (pid1, result.map_err(|error| CollectError::io(pid1, error))?),
        };
        // A non-UTF-8 mount point could not be a label value anyway.
        parse_mounts(&String::from_utf8_lossy(&bytes))
            .map_err(|detail| CollectError::parse(path, detail))
    }

    /// The mounts to report, with their labels and read-only flag, each once.
    fn select(&self, mounts: Vec<MountEntry>) -> Vec<(Labels, bool)> {
        let mut seen = HashSet::new();
        let mut selected = Vec::new();
        for mount in mounts {
            let mount_point = strip_rootfs(&mount.mount_point, &self.rootfs);
            if self.mount_points_exclude.is_match(&mount_point)
                || self.fs_types_exclude.is_match(&mount.fs_type)
            {
                debug!(mountpoint = %mount_point, fstype = %mount.fs_type, "ignoring mount");
                continue;
            }
            // Mounts can be listed twice (stacked or namespaced); the first one is reported, as
            // node_exporter does, since a repeated label set would be a duplicate series.
            let labels = [mount.device, mount.fs_type, mount_point];
            if seen.insert(labels.clone()) {
                // /proc/mounts prints `ro` when either the mount or the superblock is read-only.
                let read_only = mount.options.split(',').any(|option| option == "ro");
                selected.push((labels, read_only));
            }
        }
        selected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regex(pattern: &str) -> Pattern {
        Pattern::new(pattern).unwrap()
    }

    #[test]
    fn defaults_exclude_what_node_exporter_excludes() {
        let mount_points = regex(MOUNT_POINTS_EXCLUDE);
        for excluded in [
            "/proc",
            "/sys/fs/cgroup",
            "/dev/shm",
            "/run/credentials/x.service",
        ] {
            assert!(mount_points.is_match(excluded), "{excluded}");
        }
        for kept in ["/", "/run", "/run/user/1000", "/var/lib/docker", "/devices"] {
            assert!(!mount_points.is_match(kept), "{kept}");
        }
        let fs_types = regex(FS_TYPES_EXCLUDE);
        assert!(fs_types.is_match("cgroup2") && fs_types.is_match("overlay"));
        assert!(!fs_types.is_match("ext4") && !fs_types.is_match("tmpfs"));
    }

    #[test]
    fn config_defaults_and_refuses_unknown_keys() {
        let config: FilesystemConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(config.mount_points_exclude.as_str(), MOUNT_POINTS_EXCLUDE);
        assert_eq!(config.statfs_timeout_seconds, 5);
        let unknown = serde_json::from_str::<FilesystemConfig>(r#"{"mount_timeout": 5}"#);
        assert!(unknown.is_err());
    }

    #[test]
    fn validate_names_the_field_and_value() {
        assert!(FilesystemConfig::default().validate().is_ok());
        let error = serde_json::from_str::<FilesystemConfig>(r#"{"fs_types_exclude": "("}"#)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("'(' is not a valid regular expression"),
            "{error}"
        );
        let config = FilesystemConfig {
            statfs_timeout_seconds: 0,
            ..FilesystemConfig::default()
        };
        let error = config.validate().unwrap_err().to_string();
        assert_eq!(
            error,
            "host.filesystem.statfs_timeout_seconds: '0' must be between 1 and 3600"
        );
    }

    #[test]
    fn collect_reports_each_selected_mount_once() {
        let dir = tempfile::tempdir().unwrap();
        let (proc, rootfs) = (dir.path().join("proc"), dir.path().join("root"));
        std::fs::create_dir_all(proc.join("self")).unwrap();
        std::fs::create_dir_all(rootfs.join("data disk")).unwrap();
        std::fs::create_dir_all(rootfs.join("home")).unwrap();
        let mounts = format!(
            "/dev/vda / ext4 rw,relatime 0 0\n\
             proc /proc proc rw 0 0\n\
             /dev/vdb /data\\040disk ext4 ro,relatime 0 0\n\
             /dev/vdb /data\\040disk ext4 ro,relatime 0 0\n\
             /dev/vdc {}/home xfs rw 0 0\n\
             tmpfs /gone tmpfs rw 0 0\n",
            rootfs.display()
        );
        // No <proc>/1: read the fallback, as under hidepid.
        std::fs::write(proc.join("self/mounts"), mounts).unwrap();
        let paths = Paths {
            proc,
            rootfs,
            sys: PathBuf::from("/sys"),
        };
        let families = Filesystem::new(&FilesystemConfig::default(), &paths)
            .collect()
            .unwrap();
        let names: Vec<_> = families.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names[..2],
            ["node_filesystem_size_bytes", "node_filesystem_free_bytes"]
        );
        let series = |name: &str| -> Vec<(String, f64)> {
            let family = families.iter().find(|f| f.name == name).unwrap();
            let mut series: Vec<_> = family
                .samples
                .iter()
                .map(|s| {
                    let labels = &s.labels;
                    let key = format!(
                        "{} {} {}",
                        labels["device"], labels["fstype"], labels["mountpoint"]
                    );
                    (key, s.value)
                })
                .collect();
            series.sort_by(|a, b| a.0.cmp(&b.0));
            series
        };
        let errors = series("node_filesystem_device_error");
        let expected = [
            ("/dev/vda ext4 /", 0.0),
            ("/dev/vdb ext4 /data disk", 0.0),
            ("/dev/vdc xfs /home", 0.0),
            ("tmpfs tmpfs /gone", 1.0),
        ];
        let expected: Vec<_> = expected.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        assert_eq!(errors, expected);
        let readonly = series("node_filesystem_readonly");
        assert_eq!(readonly.len(), 3, "no readonly after a device error");
        assert_eq!(readonly[1], ("/dev/vdb ext4 /data disk".to_owned(), 1.0));
        assert!(
            series("node_filesystem_size_bytes")
                .iter()
                .all(|(_, v)| *v > 0.0)
        );
    }

    #[test]
    fn missing_mount_files_are_no_data() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths {
            proc: dir.path().to_owned(),
            rootfs: dir.path().to_owned(),
            sys: dir.path().to_owned(),
        };
        let error = Filesystem::new(&FilesystemConfig::default(), &paths)
            .collect()
            .unwrap_err();
        assert!(matches!(error, CollectError::NoData(_)), "{error}");
    }
}
