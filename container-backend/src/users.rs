//! Resolving a job's `user` (`uid[:gid]` or `name[:group]`) against the container's own
//! `/etc/passwd` and `/etc/group` — parsed here, never through the host's NSS (the host's user
//! database says nothing about the image's).

/// The identity a job runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary gid included, like `initgroups`).
    pub groups: Vec<u32>,
    /// `HOME` for the job's environment: the passwd entry's, else `/`.
    pub home: String,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &[u8]) -> impl Iterator<Item = PasswdEntry<'_>> {
    lines(passwd).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 {
            return None;
        }
        Some(PasswdEntry {
            name: f[0],
            uid: parse_id(f[2])?,
            gid: parse_id(f[3])?,
            home: f[5],
        })
    })
}

/// (name, gid, members) of each `/etc/group` line.
fn group_entries(group: &[u8]) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    lines(group).filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let members = f[3].split(',').filter(|m| !m.is_empty()).collect();
        Some((f[0], parse_id(f[2])?, members))
    })
}

fn lines(data: &[u8]) -> impl Iterator<Item = &str> {
    data.split(|&b| b == b'\n').filter_map(|l| {
        let l = std::str::from_utf8(l).ok()?.trim_end_matches('\r');
        (!l.is_empty() && !l.starts_with('#')).then_some(l)
    })
}

/// A numeric id, refusing `-1` (`u32::MAX`), which the kernel reads as "unchanged".
fn parse_id(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u32>().ok().filter(|&id| id != u32::MAX)
}

fn is_numeric(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// Resolves `spec` (`""` means root). `passwd`/`group` are the container's files, if present.
/// The error text is a complete sentence for a job's `spec_error` detail.
pub fn resolve(
    spec: &str,
    passwd: Option<&[u8]>,
    group: Option<&[u8]>,
) -> Result<ResolvedUser, String> {
    let spec = spec.trim();
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user_part = if user_part.is_empty() { "0" } else { user_part };
    let passwd = passwd.unwrap_or_default();
    let group = group.unwrap_or_default();

    let entry = if is_numeric(user_part) {
        let uid =
            parse_id(user_part).ok_or_else(|| format!("user `{user_part}` is not a valid uid"))?;
        Ok(passwd_entries(passwd).find(|e| e.uid == uid).ok_or(uid))
    } else {
        passwd_entries(passwd)
            .find(|e| e.name == user_part)
            .map(Ok)
            .ok_or_else(|| format!("user `{user_part}` is not in the image's /etc/passwd"))
    }?;
    let (uid, mut gid, name, home) = match &entry {
        Ok(e) => (e.uid, e.gid, Some(e.name), e.home.to_string()),
        // A uid without a passwd entry: gid 0, HOME=/ (Docker's behaviour).
        Err(uid) => (*uid, 0, None, "/".to_string()),
    };
    if let Some(g) = group_part.filter(|g| !g.is_empty()) {
        gid = if is_numeric(g) {
            parse_id(g).ok_or_else(|| format!("group `{g}` is not a valid gid"))?
        } else {
            group_entries(group)
                .find(|(n, _, _)| *n == g)
                .map(|(_, id, _)| id)
                .ok_or_else(|| format!("group `{g}` is not in the image's /etc/group"))?
        };
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for (_, id, members) in group_entries(group) {
            if members.contains(&name) && !groups.contains(&id) {
                groups.push(id);
            }
        }
    }
    let home = if home.is_empty() {
        "/".to_string()
    } else {
        home
    };
    Ok(ResolvedUser {
        uid,
        gid,
        groups,
        home,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &[u8] = b"root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        app:x:1000:1001:App:/home/app:/bin/sh\n\
        broken line\n\
        nobody:x:65534:65534:nobody:/:/bin/false\n";
    const GROUP: &[u8] = b"root:x:0:\napp:x:1001:\nwheel:x:10:app,other\ndocker:x:999:other\n";

    fn r(spec: &str) -> Result<ResolvedUser, String> {
        resolve(spec, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_numbers_and_defaults() {
        assert_eq!(
            r("").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into()
            }
        );
        assert_eq!(
            r("app").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                groups: vec![1001, 10],
                home: "/home/app".into()
            }
        );
        assert_eq!(
            r("1000").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1001,
                groups: vec![1001, 10],
                home: "/home/app".into()
            }
        );
        assert_eq!(
            r("4242:77").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 77,
                groups: vec![77],
                home: "/".into()
            }
        );
        assert_eq!(r("4242").unwrap().gid, 0);
        assert_eq!(r("app:docker").unwrap().gid, 999);
        assert_eq!(r("1000:1000").unwrap().gid, 1000);
    }

    #[test]
    fn unknown_names_and_bad_numbers_are_errors() {
        assert!(r("ghost").unwrap_err().contains("/etc/passwd"));
        assert!(r("app:ghosts").unwrap_err().contains("/etc/group"));
        assert!(r("4294967295").is_err());
        assert!(r("99999999999").is_err());
        assert!(resolve("app", None, None).is_err());
        assert_eq!(resolve("0", None, None).unwrap().home, "/");
    }
}
