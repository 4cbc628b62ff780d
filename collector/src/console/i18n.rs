//! Every label of the console in one table, Indonesian (the default) and English. The language
//! is chosen by the `pantau_lang` cookie. A unit test checks that no label lacks a language and
//! that every key the templates use is in the table.

/// The console's languages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Id,
    En,
}

impl Lang {
    /// From the `pantau_lang` cookie's value; Indonesian unless it says `en`.
    pub fn from_cookie(value: Option<&str>) -> Lang {
        match value {
            Some("en") => Lang::En,
            _ => Lang::Id,
        }
    }

    pub fn code(self) -> &'static str {
        match self {
            Lang::Id => "id",
            Lang::En => "en",
        }
    }
}

/// `(key, Indonesian, English)`.
const LABELS: &[(&str, &str, &str)] = &[
    ("app.title", "Pantau Konsol", "Pantau Console"),
    ("nav.now", "Sekarang", "Now"),
    ("status.pending", "menunggu", "pending"),
    ("status.sent", "terkirim", "sent"),
    ("status.queued", "dalam antrean", "queued"),
    ("status.started", "sedang diputar", "started"),
    ("status.finished", "selesai", "finished"),
    ("status.failed", "gagal", "failed"),
    ("status.expired", "kedaluwarsa", "expired"),
    ("status.preempted", "didahului", "pre-empted"),
    ("status.stopped", "dihentikan", "stopped"),
    ("status.rejected", "ditolak", "rejected"),
    ("status.collapsed", "digabung", "collapsed"),
    ("nav.send", "Kirim", "Send"),
    ("nav.schedules", "Jadwal", "Schedules"),
    ("nav.history", "Riwayat", "History"),
    ("nav.users", "Pengguna", "Users"),
    ("users.title", "Pengguna", "Users"),
    ("users.name", "Nama pengguna", "User name"),
    ("users.role", "Peran", "Role"),
    (
        "users.password",
        "Kata sandi (minimal 10 karakter)",
        "Password (at least 10 characters)",
    ),
    (
        "users.new_password",
        "Kata sandi baru (kosong = tidak diubah)",
        "New password (empty = unchanged)",
    ),
    ("users.add", "Tambah pengguna", "Add a user"),
    ("users.save", "Simpan", "Save"),
    ("users.remove", "Hapus", "Remove"),
    ("users.saved", "Pengguna disimpan", "Users saved"),
    (
        "users.self",
        "Anda tidak dapat menghapus atau menurunkan peran Anda sendiri.",
        "You cannot remove or demote yourself.",
    ),
    (
        "users.no_file",
        "api.users_file belum diatur: pengguna tidak dapat disimpan.",
        "api.users_file is not set: users cannot be saved.",
    ),
    ("nav.logout", "Keluar", "Log out"),
    ("nav.lang", "English", "Bahasa Indonesia"),
    ("role.viewer", "pemantau", "viewer"),
    ("role.operator", "operator", "operator"),
    ("role.admin", "admin", "admin"),
    ("login.title", "Masuk", "Log in"),
    ("login.user", "Nama pengguna", "User name"),
    ("login.password", "Kata sandi", "Password"),
    ("login.submit", "Masuk", "Log in"),
    (
        "login.wrong",
        "Nama pengguna atau kata sandi salah.",
        "Wrong user name or password.",
    ),
    (
        "login.limited",
        "Terlalu banyak percobaan gagal. Coba lagi nanti.",
        "Too many failed attempts. Try again later.",
    ),
    (
        "login.expired",
        "Formulir kedaluwarsa. Silakan coba lagi.",
        "The form expired. Please try again.",
    ),
    ("now.title", "Sekarang", "Now"),
    ("now.speakers", "Pengeras suara", "Speakers"),
    ("now.agent", "Agen", "Agent"),
    ("now.online", "Koneksi", "Connection"),
    ("now.device", "Perangkat", "Device"),
    ("now.playing", "Sedang diputar", "Playing"),
    ("now.queue", "Antrean", "Queue"),
    ("now.up", "hidup", "up"),
    ("now.down", "mati", "down"),
    ("now.unknown", "tidak diketahui", "unknown"),
    ("now.tone", "Nada uji", "Test tone"),
    (
        "now.announcements",
        "Pengumuman terbaru",
        "Recent announcements",
    ),
    ("now.none", "Belum ada pengumuman.", "No announcements yet."),
    (
        "now.no_agents",
        "Belum ada agen suara yang terlihat.",
        "No sound agent seen yet.",
    ),
    ("now.stop", "Hentikan", "Stop"),
    ("now.site", "Lokasi", "Site"),
    (
        "now.moves",
        "Perpindahan lokasi menunggu konfirmasi",
        "Site moves waiting for an admin",
    ),
    (
        "now.moves_help",
        "Status agen ini menyebut lokasi lain. Perintah tetap dikirim ke lokasi yang tercatat sampai admin mengonfirmasi.",
        "This agent's status names another site. Commands still go to the pinned site until an admin confirms.",
    ),
    ("now.pinned", "Lokasi tercatat", "Pinned site"),
    ("now.claimed", "Lokasi yang diklaim", "Claimed site"),
    ("now.since", "Sejak", "Since"),
    ("now.confirm_move", "Konfirmasi pindah", "Confirm move"),
    ("now.dismiss_move", "Abaikan", "Dismiss"),
    (
        "now.configured",
        "Lokasi ditetapkan oleh konfigurasi (announcements.sites).",
        "The config names the site (announcements.sites).",
    ),
    (
        "now.site_settled",
        "Lokasi agen diperbarui",
        "Site move settled for",
    ),
    ("now.sent", "Pengumuman dikirim", "Announcement sent"),
    ("now.tone_sent", "Nada uji dikirim ke", "Test tone sent to"),
    (
        "now.stopped",
        "Pengumuman dihentikan",
        "Announcement stopped",
    ),
    (
        "now.refresh",
        "Halaman ini diperbarui otomatis.",
        "This page refreshes by itself.",
    ),
    ("ann.id", "ID", "ID"),
    ("ann.time", "Waktu", "Time"),
    ("ann.by", "Oleh", "By"),
    ("ann.what", "Isi", "Message"),
    ("ann.priority", "Prioritas", "Priority"),
    ("ann.targets", "Tujuan dan hasil", "Targets and outcome"),
    ("send.title", "Kirim pengumuman", "Send an announcement"),
    ("send.text", "Teks yang diucapkan", "Text to speak"),
    (
        "send.estimate",
        "Perkiraan durasi bicara",
        "Estimated speaking time",
    ),
    ("send.seconds", "detik", "seconds"),
    ("send.clip", "Atau rekaman", "Or a clip"),
    ("send.no_clip", "(tanpa rekaman)", "(no clip)"),
    ("send.targets", "Pengeras suara", "Speakers"),
    ("send.zones", "Zona", "Zones"),
    ("send.priority", "Prioritas", "Priority"),
    ("send.submit", "Kirim", "Send"),
    (
        "send.viewer",
        "Peran Anda hanya dapat melihat; mengirim butuh operator.",
        "Your role may only view; sending needs an operator.",
    ),
    (
        "send.confirm_title",
        "Konfirmasi pengumuman darurat",
        "Confirm the emergency announcement",
    ),
    (
        "send.confirm_text",
        "Pengumuman darurat menyela semua yang sedang diputar. Kirim sekarang?",
        "An emergency announcement interrupts everything playing. Send it now?",
    ),
    (
        "send.confirm",
        "Ya, kirim darurat",
        "Yes, send the emergency",
    ),
    ("send.cancel", "Batal", "Cancel"),
    ("prio.emergency", "darurat", "emergency"),
    ("prio.alert", "peringatan", "alert"),
    ("prio.operator", "operator", "operator"),
    ("prio.scheduled", "terjadwal", "scheduled"),
    ("sched.title", "Jadwal", "Schedules"),
    ("sched.name", "Nama", "Name"),
    ("sched.when", "Kapan", "When"),
    ("sched.next", "Berikutnya (WIB)", "Next run (WIB)"),
    ("sched.state", "Status", "State"),
    ("sched.active", "aktif", "active"),
    ("sched.paused", "dijeda", "paused"),
    (
        "sched.from_config",
        "dari berkas konfigurasi (hanya baca)",
        "from the config file (read-only)",
    ),
    ("sched.new", "Jadwal baru", "New schedule"),
    ("sched.edit", "Ubah", "Edit"),
    ("sched.pause", "Jeda", "Pause"),
    ("sched.resume", "Lanjutkan", "Resume"),
    ("sched.delete", "Hapus", "Delete"),
    ("sched.save", "Simpan", "Save"),
    (
        "sched.times",
        "Jam (HH:MM, pisahkan dengan koma)",
        "Times (HH:MM, comma separated)",
    ),
    (
        "sched.weekdays",
        "Hari (kosong = setiap hari)",
        "Days (none = every day)",
    ),
    ("sched.cron", "Atau ekspresi cron", "Or a cron expression"),
    (
        "sched.valid_from",
        "Berlaku mulai (YYYY-MM-DD)",
        "Valid from (YYYY-MM-DD)",
    ),
    (
        "sched.valid_until",
        "Berlaku sampai (YYYY-MM-DD)",
        "Valid until (YYYY-MM-DD)",
    ),
    (
        "sched.versions",
        "Versi jadwal per agen suara",
        "Schedule version per sound agent",
    ),
    ("sched.version", "Versi dikirim", "Version sent"),
    ("sched.applied", "Versi diterapkan", "Version applied"),
    ("sched.none", "Belum ada jadwal.", "No schedules yet."),
    ("sched.never", "tidak ada", "none"),
    (
        "sched.admin_only",
        "Mengubah jadwal butuh peran admin.",
        "Changing schedules needs the admin role.",
    ),
    ("sched.saved", "Jadwal disimpan", "Schedule saved"),
    ("sched.deleted", "Jadwal dihapus", "Schedule deleted"),
    ("day.mon", "Sen", "Mon"),
    ("day.tue", "Sel", "Tue"),
    ("day.wed", "Rab", "Wed"),
    ("day.thu", "Kam", "Thu"),
    ("day.fri", "Jum", "Fri"),
    ("day.sat", "Sab", "Sat"),
    ("day.sun", "Min", "Sun"),
    ("hist.title", "Riwayat", "History"),
    ("hist.from", "Dari tanggal", "From date"),
    ("hist.to", "Sampai tanggal", "To date"),
    ("hist.target", "Tujuan", "Target"),
    ("hist.outcome", "Hasil", "Outcome"),
    ("hist.any", "(semua)", "(any)"),
    ("hist.filter", "Saring", "Filter"),
    (
        "hist.none",
        "Tidak ada pengumuman yang cocok.",
        "No matching announcements.",
    ),
    ("error.title", "Tidak dapat diproses", "Could not be done"),
    ("error.back", "Kembali", "Back"),
    (
        "error.csrf",
        "Token keamanan formulir hilang atau salah. Muat ulang halaman lalu coba lagi.",
        "The form's security token is missing or wrong. Reload the page and try again.",
    ),
    (
        "error.forbidden",
        "Peran Anda tidak boleh melakukan ini.",
        "Your role may not do this.",
    ),
    (
        "error.off",
        "Pengumuman tidak aktif: announcements.key_file belum diatur.",
        "Announcements are off: announcements.key_file is not set.",
    ),
];

/// The label `key` in `lang`; the key itself if it is missing (the test keeps that from
/// happening).
/// The label key of a target's status, for those the history knows.
pub fn status_key(status: &str) -> Option<&'static str> {
    STATUS_KEYS
        .iter()
        .find(|(name, _)| *name == status)
        .map(|(_, key)| *key)
}

const STATUS_KEYS: &[(&str, &str)] = &[
    ("pending", "status.pending"),
    ("sent", "status.sent"),
    ("queued", "status.queued"),
    ("started", "status.started"),
    ("finished", "status.finished"),
    ("failed", "status.failed"),
    ("expired", "status.expired"),
    ("preempted", "status.preempted"),
    ("stopped", "status.stopped"),
    ("rejected", "status.rejected"),
    ("collapsed", "status.collapsed"),
];

pub fn t(lang: Lang, key: &str) -> &'static str {
    LABELS
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or("?", |(_, id, en)| match lang {
            Lang::Id => id,
            Lang::En => en,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_label_has_both_languages_and_keys_are_unique() {
        let mut keys = BTreeSet::new();
        for (key, id, en) in LABELS {
            assert!(keys.insert(*key), "key '{key}' twice");
            assert!(!id.trim().is_empty(), "'{key}' has no Indonesian");
            assert!(!en.trim().is_empty(), "'{key}' has no English");
        }
    }

    #[test]
    fn every_status_has_a_label_in_both_languages() {
        for (status, key) in STATUS_KEYS {
            assert_ne!(t(Lang::Id, key), "?", "{status}");
            assert_eq!(status_key(status), Some(*key));
        }
        assert_eq!(t(Lang::Id, "status.finished"), "selesai");
        assert_eq!(status_key("unknown"), None);
    }

    #[test]
    fn every_key_the_templates_and_pages_use_exists() {
        let sources = [
            include_str!("../../templates/console/layout.html"),
            include_str!("../../templates/console/login.html"),
            include_str!("../../templates/console/now.html"),
            include_str!("../../templates/console/send.html"),
            include_str!("../../templates/console/confirm.html"),
            include_str!("../../templates/console/schedules.html"),
            include_str!("../../templates/console/schedule_form.html"),
            include_str!("../../templates/console/history.html"),
            include_str!("../../templates/console/message.html"),
            include_str!("../../templates/console/row.html"),
            include_str!("../../templates/console/users.html"),
            include_str!("users.rs"),
            include_str!("mod.rs"),
            include_str!("page.rs"),
            include_str!("now.rs"),
            include_str!("send.rs"),
            include_str!("login.rs"),
            include_str!("schedules.rs"),
            include_str!("history.rs"),
        ];
        let mut used = 0;
        for source in sources {
            for (index, _) in source.match_indices("t(\"") {
                // `t("` itself, not the end of another name (`static_asset("`).
                let before = source[..index].chars().next_back().unwrap_or(' ');
                if before.is_alphanumeric() || before == '_' {
                    continue;
                }
                let rest = &source[index + 3..];
                let Some(end) = rest.find('"') else { continue };
                let key = &rest[..end];
                used += 1;
                assert!(
                    LABELS.iter().any(|(k, _, _)| *k == key),
                    "label '{key}' is used but not in LABELS"
                );
            }
        }
        assert!(used > 50, "the scan found the labels ({used})");
    }

    #[test]
    fn indonesian_unless_english_is_chosen() {
        assert_eq!(t(Lang::from_cookie(None), "nav.send"), "Kirim");
        assert_eq!(t(Lang::from_cookie(Some("fr")), "nav.send"), "Kirim");
        assert_eq!(t(Lang::from_cookie(Some("en")), "nav.send"), "Send");
    }
}
