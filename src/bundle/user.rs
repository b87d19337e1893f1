//! The image config's `User`, resolved through the image's own `/etc/passwd`
//! and `/etc/group` the way runc and umoci do it (`GetExecUser` of
//! moby/sys/user, formerly runc's libcontainer/user).
//!
//! Forms: `""`, `name`, `uid`, `name:group`, `name:gid`, `uid:group`,
//! `uid:gid` and `:group`.
//!
//! * A name must be in `/etc/passwd`; a number need not be (it then keeps
//!   gid 0 and gets no home).
//! * With no explicit group the primary gid comes from the passwd entry and
//!   the supplementary gids from the groups that list the user as a member.
//! * An explicit group replaces the gid (a name must be in `/etc/group`, a
//!   number need not be) and gives no supplementary gids.
//! * The first matching entry wins; ids must be in `0..=2147483647`.

use std::fmt;

/// What a container process runs as.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary gids, in `/etc/group` order.
    pub sgids: Vec<u32>,
    /// The passwd entry's home directory, when a passwd entry matched.
    pub home: Option<String>,
    /// The passwd entry's name, when one matched.
    pub name: Option<String>,
}

/// Why a `User` cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserError {
    /// A user name with no entry in `/etc/passwd` (`None`: the image has no
    /// `/etc/passwd` at all).
    NoSuchUser { name: String, passwd: bool },
    /// A group name with no entry in `/etc/group`.
    NoSuchGroup { name: String, group: bool },
    /// A numeric uid or gid outside `0..=2147483647`.
    OutOfRange { what: &'static str, value: String },
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UserError::NoSuchUser { name, passwd: true } => {
                write!(f, "no user {name:?} in the image's /etc/passwd")
            }
            UserError::NoSuchUser {
                name,
                passwd: false,
            } => write!(
                f,
                "no user {name:?}: the image has no /etc/passwd (use a numeric uid)"
            ),
            UserError::NoSuchGroup { name, group: true } => {
                write!(f, "no group {name:?} in the image's /etc/group")
            }
            UserError::NoSuchGroup { name, group: false } => write!(
                f,
                "no group {name:?}: the image has no /etc/group (use a numeric gid)"
            ),
            UserError::OutOfRange { what, value } => {
                write!(f, "{what} {value} is out of range (0 to {MAX_ID})")
            }
        }
    }
}

const MAX_ID: i64 = i32::MAX as i64;

struct PasswdEntry<'a> {
    name: &'a str,
    uid: i64,
    gid: i64,
    home: &'a str,
}

struct GroupEntry<'a> {
    name: &'a str,
    gid: i64,
    members: Vec<&'a str>,
}

/// The colon-separated fields of each meaningful line (blank lines and
/// `#` comments are skipped; surrounding white space is trimmed).
fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
}

/// Like Go's `strconv.Atoi` as GetExecUser uses it: a bad number is 0 in a
/// file, and "not a number" in a user spec.
fn number(s: &str) -> Option<i64> {
    s.parse::<i64>().ok()
}

fn passwd_entries(text: &str) -> Vec<PasswdEntry<'_>> {
    records(text)
        .map(|f| PasswdEntry {
            name: f.first().copied().unwrap_or(""),
            uid: f.get(2).and_then(|s| number(s)).unwrap_or(0),
            gid: f.get(3).and_then(|s| number(s)).unwrap_or(0),
            home: f.get(5).copied().unwrap_or(""),
        })
        .collect()
}

fn group_entries(text: &str) -> Vec<GroupEntry<'_>> {
    records(text)
        .map(|f| GroupEntry {
            name: f.first().copied().unwrap_or(""),
            gid: f.get(2).and_then(|s| number(s)).unwrap_or(0),
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
        .collect()
}

fn in_range(what: &'static str, value: i64, text: &str) -> Result<u32, UserError> {
    if (0..=MAX_ID).contains(&value) {
        Ok(value as u32)
    } else {
        Err(UserError::OutOfRange {
            what,
            value: text.to_string(),
        })
    }
}

/// Resolve `spec` (the image config's `User`) against the image's
/// `/etc/passwd` and `/etc/group` contents (`None`: the file is absent).
pub fn resolve(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (user_arg, group_arg) = match spec.trim().split_once(':') {
        Some((u, g)) => (u, g.split(':').next().unwrap_or("")),
        None => (spec.trim(), ""),
    };
    let user_num = number(user_arg);
    let group_num = number(group_arg);
    let mut out = ExecUser::default();

    let users = passwd.map(passwd_entries).unwrap_or_default();
    let matched = users.iter().find(|u| {
        if user_arg.is_empty() {
            u.uid == 0
        } else if let Some(n) = user_num {
            u.uid == n
        } else {
            u.name == user_arg
        }
    });
    match matched {
        Some(u) => {
            out.uid = in_range("uid", u.uid, &u.uid.to_string())?;
            out.gid = in_range("gid", u.gid, &u.gid.to_string())?;
            out.home = Some(u.home.to_string()).filter(|h| !h.is_empty());
            out.name = Some(u.name.to_string());
        }
        None if user_arg.is_empty() => {}
        None => match user_num {
            Some(n) => out.uid = in_range("uid", n, user_arg)?,
            None => {
                return Err(UserError::NoSuchUser {
                    name: user_arg.to_string(),
                    passwd: passwd.is_some(),
                })
            }
        },
    }

    let matched_name = matched.map(|u| u.name).unwrap_or("");
    if !group_arg.is_empty() || !matched_name.is_empty() {
        let groups = group.map(group_entries).unwrap_or_default();
        if !group_arg.is_empty() {
            let found = groups.iter().find(|g| match group_num {
                Some(n) => g.gid == n,
                None => g.name == group_arg,
            });
            out.gid = match (found, group_num) {
                (Some(g), _) => in_range("gid", g.gid, &g.gid.to_string())?,
                (None, Some(n)) => in_range("gid", n, group_arg)?,
                (None, None) => {
                    return Err(UserError::NoSuchGroup {
                        name: group_arg.to_string(),
                        group: group.is_some(),
                    })
                }
            };
        } else {
            for g in groups.iter().filter(|g| g.members.contains(&matched_name)) {
                out.sgids.push(in_range("gid", g.gid, &g.gid.to_string())?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "\
root:x:0:0:root:/root:/bin/bash
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin

app:x:1000:1000:app user:/home/app:/bin/sh
nohome:x:1001:1001::
app:x:2000:2000:shadowed duplicate:/nowhere:/bin/sh
";
    const GROUP: &str = "\
root:x:0:
adm:x:4:app,daemon
staff:x:50:root
app:x:1000:
audio:x:29:app
";

    fn ok(spec: &str) -> ExecUser {
        resolve(spec, Some(PASSWD), Some(GROUP)).unwrap()
    }

    fn user(
        uid: u32,
        gid: u32,
        sgids: &[u32],
        home: Option<&str>,
    ) -> (u32, u32, Vec<u32>, Option<String>) {
        (uid, gid, sgids.to_vec(), home.map(str::to_string))
    }

    fn parts(u: ExecUser) -> (u32, u32, Vec<u32>, Option<String>) {
        (u.uid, u.gid, u.sgids, u.home)
    }

    #[test]
    fn empty_is_root_with_its_entry() {
        assert_eq!(parts(ok("")), user(0, 0, &[50], Some("/root")));
    }

    #[test]
    fn names_and_numbers() {
        assert_eq!(
            parts(ok("app")),
            user(1000, 1000, &[4, 29], Some("/home/app"))
        );
        assert_eq!(
            parts(ok("1000")),
            user(1000, 1000, &[4, 29], Some("/home/app"))
        );
        assert_eq!(parts(ok("daemon")), user(1, 1, &[4], Some("/usr/sbin")));
        assert_eq!(parts(ok("nohome")), user(1001, 1001, &[], None));
    }

    #[test]
    fn numeric_uid_without_entry_keeps_gid_0() {
        assert_eq!(parts(ok("4242")), user(4242, 0, &[], None));
        assert_eq!(parts(ok("4242:77")), user(4242, 77, &[], None));
        assert_eq!(parts(ok("4242:staff")), user(4242, 50, &[], None));
    }

    #[test]
    fn explicit_group_replaces_gid_and_drops_supplementary() {
        assert_eq!(
            parts(ok("app:staff")),
            user(1000, 50, &[], Some("/home/app"))
        );
        assert_eq!(parts(ok("app:50")), user(1000, 50, &[], Some("/home/app")));
        assert_eq!(
            parts(ok("app:9999")),
            user(1000, 9999, &[], Some("/home/app"))
        );
        assert_eq!(parts(ok("1000:4")), user(1000, 4, &[], Some("/home/app")));
        assert_eq!(parts(ok(":staff")), user(0, 50, &[], Some("/root")));
    }

    #[test]
    fn first_entry_wins() {
        assert_eq!(ok("app").uid, 1000);
        assert_eq!(ok("app").name.as_deref(), Some("app"));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("nosuch", Some(PASSWD), Some(GROUP))
                .unwrap_err()
                .to_string(),
            "no user \"nosuch\" in the image's /etc/passwd"
        );
        assert_eq!(
            resolve("app:nogroup", Some(PASSWD), Some(GROUP))
                .unwrap_err()
                .to_string(),
            "no group \"nogroup\" in the image's /etc/group"
        );
        assert_eq!(
            resolve("app", None, None).unwrap_err().to_string(),
            "no user \"app\": the image has no /etc/passwd (use a numeric uid)"
        );
    }

    #[test]
    fn no_files_numbers_still_work() {
        assert_eq!(
            parts(resolve("", None, None).unwrap()),
            user(0, 0, &[], None)
        );
        assert_eq!(
            parts(resolve("5:6", None, None).unwrap()),
            user(5, 6, &[], None)
        );
        assert_eq!(
            parts(resolve("5", None, None).unwrap()),
            user(5, 0, &[], None)
        );
    }

    #[test]
    fn range_is_checked() {
        assert!(matches!(
            resolve("-1", Some(PASSWD), Some(GROUP)),
            Err(UserError::OutOfRange { what: "uid", .. })
        ));
        assert!(matches!(
            resolve("1:2147483648", Some(PASSWD), Some(GROUP)),
            Err(UserError::OutOfRange { what: "gid", .. })
        ));
        assert_eq!(ok("2147483647").uid, 2147483647);
    }
}
