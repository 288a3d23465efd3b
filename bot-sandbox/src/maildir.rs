//! Reading mail from the accounts' maildirs (chatmail's layout, Dovecot's
//! maildir++): INBOX is the account directory itself, a folder `F` is its
//! subdirectory `.F`. Dovecot's `dovecot-uidlist` in each folder maps UIDs
//! to file names; the file is in `new/` or `cur/` (where its name gains
//! `:2,<flags>`).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The directory of `mailbox` in the account at `home`.
pub fn folder_dir(home: &Path, mailbox: &str) -> PathBuf {
    if mailbox.eq_ignore_ascii_case("INBOX") {
        home.to_path_buf()
    } else {
        home.join(format!(".{mailbox}"))
    }
}

/// One entry of `dovecot-uidlist`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UidEntry {
    pub uid: u32,
    /// The file name without the `:2,` flags part.
    pub base: String,
}

/// The UIDVALIDITY and the entries of a uidlist's text.
pub fn parse_uidlist(text: &str) -> Option<(u32, Vec<UidEntry>)> {
    let mut lines = text.lines();
    let header = lines.next()?;
    let mut words = header.split(' ');
    if words.next()? != "3" {
        return None;
    }
    let uidvalidity = words.find_map(|w| w.strip_prefix('V')).and_then(|v| v.parse().ok())?;
    let entries = lines
        .filter_map(|line| {
            let (fields, name) = line.split_once(" :").or_else(|| line.split_once(':'))?;
            let uid = fields.split(' ').next()?.trim().parse().ok()?;
            let base = name.split(':').next()?.to_owned();
            Some(UidEntry { uid, base })
        })
        .collect();
    Some((uidvalidity, entries))
}

fn read_uidlist(folder: &Path) -> io::Result<(u32, Vec<UidEntry>)> {
    let path = folder.join("dovecot-uidlist");
    let text = fs::read_to_string(&path).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    parse_uidlist(&text).ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a version 3 uidlist", path.display())))
}

/// The file whose base name is `base`, in `new/` or `cur/`.
fn find_file(folder: &Path, base: &str) -> io::Result<Option<PathBuf>> {
    let plain = folder.join("new").join(base);
    if plain.exists() {
        return Ok(Some(plain));
    }
    for sub in ["cur", "new"] {
        let dir = folder.join(sub);
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", dir.display()))),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.split(':').next() == Some(base) {
                return Ok(Some(entry.path()));
            }
        }
    }
    Ok(None)
}

/// The path of the mail with `uid` in `mailbox`, if it is still there and
/// UIDVALIDITY matches (when given).
pub fn find_mail(home: &Path, mailbox: &str, uidvalidity: Option<u32>, uid: u32) -> io::Result<Option<PathBuf>> {
    let folder = folder_dir(home, mailbox);
    let (validity, entries) = read_uidlist(&folder)?;
    if uidvalidity.is_some_and(|v| v != validity) {
        return Ok(None);
    }
    match entries.iter().find(|e| e.uid == uid) {
        Some(entry) => find_file(&folder, &entry.base),
        None => Ok(None),
    }
}

/// The mail with the highest UID that is still in `mailbox`, if any.
pub fn newest_mail(home: &Path, mailbox: &str) -> io::Result<Option<(u32, PathBuf)>> {
    newest_mail_except(home, mailbox, &[])
}

/// The mail with the highest UID in `mailbox` that is not one of `gone`.
pub fn newest_mail_except(home: &Path, mailbox: &str, gone: &[u32]) -> io::Result<Option<(u32, PathBuf)>> {
    let folder = folder_dir(home, mailbox);
    let (_, mut entries) = match read_uidlist(&folder) {
        Ok(found) => found,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    entries.sort_by_key(|e| std::cmp::Reverse(e.uid));
    for entry in entries.into_iter().filter(|e| !gone.contains(&e.uid)) {
        if let Some(path) = find_file(&folder, &entry.base)? {
            return Ok(Some((entry.uid, path)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uidlist() {
        let text = "3 V1700000000 N4 G0a1b2c\n1 G9f :1700.M1P2.host,S=10,W=11\n3 :1701.M2P2.host,S=20:2,S\n";
        let (validity, entries) = parse_uidlist(text).expect("parses");
        assert_eq!(validity, 1_700_000_000);
        assert_eq!(entries, vec![
            UidEntry { uid: 1, base: "1700.M1P2.host,S=10,W=11".into() },
            UidEntry { uid: 3, base: "1701.M2P2.host,S=20".into() },
        ]);
        assert_eq!(parse_uidlist("1 V1 N1\n"), None, "old versions are not read");
        assert_eq!(parse_uidlist(""), None);
    }

    #[test]
    fn finds_mail_by_uid_in_new_and_cur() {
        let home = tempfile::tempdir().expect("tempdir");
        let folder = folder_dir(home.path(), "DeltaBot");
        for sub in ["new", "cur", "tmp"] {
            fs::create_dir_all(folder.join(sub)).expect("dirs");
        }
        fs::write(folder.join("dovecot-uidlist"), "3 V7 N3\n1 :a.host\n2 :b.host\n").expect("uidlist");
        fs::write(folder.join("new/a.host"), "A").expect("a");
        fs::write(folder.join("cur/b.host:2,S"), "B").expect("b");
        assert_eq!(find_mail(home.path(), "DeltaBot", Some(7), 1).expect("find"), Some(folder.join("new/a.host")));
        assert_eq!(find_mail(home.path(), "DeltaBot", None, 2).expect("find"), Some(folder.join("cur/b.host:2,S")));
        assert_eq!(find_mail(home.path(), "DeltaBot", Some(8), 2).expect("find"), None, "other UIDVALIDITY");
        assert_eq!(find_mail(home.path(), "DeltaBot", None, 5).expect("find"), None);
        assert_eq!(newest_mail(home.path(), "DeltaBot").expect("newest"), Some((2, folder.join("cur/b.host:2,S"))));
        assert_eq!(newest_mail_except(home.path(), "DeltaBot", &[2]).expect("newest"), Some((1, folder.join("new/a.host"))));
        assert_eq!(newest_mail_except(home.path(), "DeltaBot", &[1, 2]).expect("newest"), None);
        fs::remove_file(folder.join("cur/b.host:2,S")).expect("expunge");
        assert_eq!(newest_mail(home.path(), "DeltaBot").expect("newest"), Some((1, folder.join("new/a.host"))));
        assert_eq!(newest_mail(home.path(), "Other").expect("missing folder"), None);
    }
}
