//! containers-registries.conf(5), as containers/image (and so skopeo and
//! podman) reads it: where an image name is pulled from (its mirrors, then
//! the location its prefix is rewritten to), which of those are reached
//! without TLS verification, and which names are blocked.
//!
//! # Which files
//!
//! The main file is the first of:
//!
//! 1. `--registries-conf FILE`, else `$CONTAINERS_REGISTRIES_CONF` (an
//!    explicit file must exist);
//! 2. `$XDG_CONFIG_HOME/containers/registries.conf` (default
//!    `$HOME/.config/containers/registries.conf`), when it exists;
//! 3. `/etc/containers/registries.conf` (none at all is no rule at all).
//!
//! Then the `*.conf` files of the drop-in directories, each directory in
//! lexical order of the names, every later file overriding the earlier
//! ones: for the user's file, only its own `registries.conf.d` beside it;
//! for the system file, `/etc/containers/registries.conf.d` then the user's
//! `registries.conf.d` (containers-registries.conf.d(5)); for an explicit
//! file, the `registries.conf.d` beside it (containers/image would read the
//! system and user directories here; beside it keeps an explicit file
//! self-contained). A missing directory is no drop-in; sub-directories and
//! other names are ignored.
//!
//! # What is read
//!
//! Version 2's `[[registry]]` tables: `prefix` (default: `location`),
//! `location`, `insecure`, `blocked`, `mirror-by-digest-only`, and
//! `[[registry.mirror]]` tables with `location`, `insecure` and
//! `pull-from-mirror` (`all`, `digest-only`, `tag-only`). Version 1's
//! `[registries.insecure]` and `[registries.block]` lists become such
//! tables, as containers/image converts them (the two versions may not be
//! mixed in one file). `unqualified-search-registries`, `short-name-mode`,
//! `[aliases]`, `credential-helpers` and `[registries.search]` are about
//! short names, which `docker://` does not search (a short name is
//! `docker.io/library/…`, as in skopeo): they are type-checked and ignored.
//! A value of the wrong type, and a rule containers/image refuses (a URL
//! scheme in a location, a mirror without a location, `pull-from-mirror`
//! with `mirror-by-digest-only`, …), is an error naming the file and line;
//! an unknown key in a `[[registry]]` or mirror table is logged and ignored,
//! as containers/image ignores it.
//!
//! Within one file the first table with a prefix wins; a drop-in's table
//! replaces the one with the same prefix from an earlier file.
//!
//! # Resolution
//!
//! A repository `HOST/PATH` is governed by the table whose prefix matches
//! it longest: a prefix matches the name itself, or a part of it that ends
//! before a `/` or `:`; `*.example.com` matches the subdomains of
//! example.com (and not example.com itself). A blocked table refuses the
//! image. Otherwise the sources are, in order: the mirrors (those whose
//! `pull-from-mirror` admits the reference, none for a tag under
//! `mirror-by-digest-only`), then the primary location; each is the name
//! with the matched prefix replaced by the source's location. A source is
//! insecure (plain HTTP and unverified TLS allowed) when its table says so,
//! or the table governing its host does; a source on a blocked host is
//! left out.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::io;
use std::ops::Range;
use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::source::registry::reference::{self, RepositoryName};
use crate::sys::bounded::{self, FileRead};

/// The largest registries.conf (or drop-in) read.
pub const MAX_CONF_FILE_BYTES: u64 = 1024 * 1024;

/// The most drop-in files read from one directory.
pub const MAX_DROP_INS: usize = 1024;

/// The variable naming the main file, as for podman and skopeo.
pub const CONF_ENV: &str = "CONTAINERS_REGISTRIES_CONF";

/// The system's main file.
pub const SYSTEM_FILE: &str = "/etc/containers/registries.conf";

const DROP_IN_DIR: &str = "registries.conf.d";

/// The parts of the process environment that decide which files are read.
/// Empty variables count as unset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Env {
    /// `--registries-conf`, else `$CONTAINERS_REGISTRIES_CONF`: the main
    /// file, which must exist.
    pub explicit: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
    /// `$HOME`.
    pub home: Option<PathBuf>,
    /// The system's main file ([`SYSTEM_FILE`]; a test's own elsewhere).
    pub system_file: PathBuf,
}

impl Env {
    /// Reads the variables of the running process.
    pub fn from_process() -> Env {
        let variable = |name: &str| {
            std::env::var_os(name)
                .filter(|value| !value.is_empty())
                .map(PathBuf::from)
        };
        Env {
            explicit: variable(CONF_ENV),
            xdg_config_home: variable("XDG_CONFIG_HOME"),
            home: variable("HOME"),
            system_file: PathBuf::from(SYSTEM_FILE),
        }
    }

    /// `--registries-conf FILE`: replaces `$CONTAINERS_REGISTRIES_CONF`.
    pub fn with_file(mut self, file: Option<PathBuf>) -> Env {
        if let Some(file) = file.filter(|f| !f.as_os_str().is_empty()) {
            self.explicit = Some(file);
        }
        self
    }

    /// `$XDG_CONFIG_HOME/containers`, or `$HOME/.config/containers`.
    fn user_dir(&self) -> Option<PathBuf> {
        self.xdg_config_home
            .clone()
            .or_else(|| self.home.as_ref().map(|home| home.join(".config")))
            .map(|config| config.join("containers"))
    }

    /// The files to read, as the module documentation orders them.
    pub fn plan(&self) -> Plan {
        let beside = |file: &Path| {
            file.parent()
                .unwrap_or_else(|| Path::new(""))
                .join(DROP_IN_DIR)
        };
        if let Some(explicit) = &self.explicit {
            return Plan {
                main: explicit.clone(),
                main_required: true,
                drop_in_dirs: vec![beside(explicit)],
            };
        }
        let user_dir = self.user_dir();
        if let Some(user_dir) = &user_dir {
            let user_file = user_dir.join("registries.conf");
            // As containers/image's check: a file we may not look at, or
            // a dangling link, is no user file.
            if user_file.exists() {
                return Plan {
                    main: user_file,
                    main_required: true,
                    drop_in_dirs: vec![user_dir.join(DROP_IN_DIR)],
                };
            }
        }
        let mut drop_in_dirs = vec![beside(&self.system_file)];
        drop_in_dirs.extend(user_dir.map(|d| d.join(DROP_IN_DIR)));
        Plan {
            main: self.system_file.clone(),
            main_required: false,
            drop_in_dirs,
        }
    }
}

/// Which files make up the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub main: PathBuf,
    /// Whether a missing main file is an error (it was asked for).
    pub main_required: bool,
    /// Read in this order, each one's `*.conf` files in lexical order.
    pub drop_in_dirs: Vec<PathBuf>,
}

/// Why registries.conf could not be read, or refuses an image.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{}: no such file (named by --registries-conf or ${CONF_ENV})",
        path.display()
    )]
    Missing { path: PathBuf },

    #[error("{} is larger than {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },

    #[error("{} holds more than {limit} drop-in files", dir.display())]
    TooManyDropIns { dir: PathBuf, limit: usize },

    #[error("{}:{line}:{column}: not valid TOML: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },

    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        path: PathBuf,
        line: usize,
        message: String,
    },

    #[error("blocked by the [[registry]] with prefix {prefix:?} ({origin})")]
    Blocked { prefix: String, origin: Origin },

    #[error(
        "the [[registry]] with prefix {prefix:?} ({origin}) rewrites it to {rewritten:?}, \
         which is not a repository name: {reason}"
    )]
    BadRewrite {
        prefix: String,
        origin: Origin,
        rewritten: String,
        reason: String,
    },
}

/// Where a `[[registry]]` table was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Which references a mirror serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

/// How the image is asked for: by tag or by digest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefKind {
    Tag,
    Digest,
}

/// A `[[registry.mirror]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

impl Mirror {
    fn serves(&self, kind: RefKind) -> bool {
        !matches!(
            (self.pull_from_mirror, kind),
            (PullFromMirror::DigestOnly, RefKind::Tag) | (PullFromMirror::TagOnly, RefKind::Digest)
        )
    }
}

/// A `[[registry]]` table, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it governs: `HOST[/PATH]`, or `*.DOMAIN`.
    pub prefix: String,
    /// What the matched prefix is replaced by; empty (only with a `*.`
    /// prefix): the name as it is.
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
    pub origin: Origin,
}

/// One place to try for an image: a repository and whether it may be
/// reached without TLS verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSource {
    pub name: RepositoryName,
    /// Plain HTTP and unverified certificates allowed for this source only.
    pub insecure: bool,
    /// A mirror (false: the primary location).
    pub mirror: bool,
}

impl fmt::Display for PullSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let role = if self.mirror { "mirror" } else { "primary" };
        write!(f, "{role} {}", self.name)
    }
}

/// The rules of every file read, one per prefix.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    rules: BTreeMap<String, Rule>,
    /// The files read, in order.
    files: Vec<PathBuf>,
}

impl RegistriesConf {
    /// Read the files `env` names (see the module documentation).
    pub fn load(env: &Env) -> Result<RegistriesConf, ConfError> {
        let plan = env.plan();
        let mut conf = RegistriesConf::default();
        match read_bounded(&plan.main)? {
            Some(text) => conf.merge(RegistriesConf::parse(&text, &plan.main)?),
            None if plan.main_required => return Err(ConfError::Missing { path: plan.main }),
            None => {}
        }
        for dir in &plan.drop_in_dirs {
            for file in drop_ins(dir)? {
                // Gone since the listing: as if it was never there.
                if let Some(text) = read_bounded(&file)? {
                    conf.merge(RegistriesConf::parse(&text, &file)?);
                }
            }
        }
        Ok(conf)
    }

    /// One file's rules (`file` names it in errors and origins).
    pub fn parse(text: &str, file: &Path) -> Result<RegistriesConf, ConfError> {
        let parser = Parser { text, file };
        let document = DeTable::parse(text).map_err(|e| parser.syntax(&e))?;
        let mut v2 = Vec::new();
        let mut v1 = V1Lists::default();
        for (key, value) in document.get_ref().iter() {
            match key.get_ref().as_ref() {
                "registry" => {
                    for table in parser.tables(key, value)? {
                        v2.push(parser.rule(table)?);
                    }
                }
                "registries" => v1 = parser.v1(value)?,
                "unqualified-search-registries" | "credential-helpers" => {
                    parser.strings(key.get_ref(), value)?;
                }
                "short-name-mode" | "additional-layer-store-auth-helper" => {
                    parser.string(key.get_ref(), value)?;
                }
                "aliases" => {
                    for (alias, target) in parser.table(key.get_ref(), value)?.iter() {
                        parser.string(alias.get_ref(), target)?;
                    }
                }
                other => tracing::debug!(
                    "{}:{}: key {other:?} is not used by ocimount",
                    file.display(),
                    parser.line(key.span())
                ),
            }
        }
        if !v2.is_empty() && !v1.is_empty() {
            return Err(ConfError::Invalid {
                path: file.to_path_buf(),
                line: parser.line(v1.span.clone()),
                message: "[registries.*] (version 1) and [[registry]] (version 2) tables \
                          may not be mixed in one file"
                    .to_string(),
            });
        }
        let rules = if v2.is_empty() {
            parser.v1_rules(&v1)?
        } else {
            v2
        };
        parser.check_conflicts(&rules)?;
        let mut conf = RegistriesConf {
            rules: BTreeMap::new(),
            files: vec![file.to_path_buf()],
        };
        for rule in rules {
            // The first table with a prefix wins within a file, as in
            // containers/image.
            if let Some(first) = conf.rules.get(&rule.prefix) {
                tracing::debug!(
                    "{}: prefix {:?} again; the table at {} is used",
                    rule.origin,
                    rule.prefix,
                    first.origin
                );
                continue;
            }
            conf.rules.insert(rule.prefix.clone(), rule);
        }
        Ok(conf)
    }

    /// Take a later file's rules: each replaces the one with its prefix.
    pub fn merge(&mut self, later: RegistriesConf) {
        self.rules.extend(later.rules);
        self.files.extend(later.files);
    }

    /// The rules, by prefix.
    pub fn rules(&self) -> impl Iterator<Item = &Rule> {
        self.rules.values()
    }

    /// The files read, in order.
    pub fn files(&self) -> &[PathBuf] {
        &self.files
    }

    /// The rule governing `name` (`HOST`, `HOST/PATH`): the longest
    /// matching prefix; between two of one length (`*.b.io` and `a.b.io`),
    /// the one without a wildcard.
    pub fn find(&self, name: &str) -> Option<&Rule> {
        self.rules
            .values()
            .filter(|rule| match_len(name, &rule.prefix).is_some())
            .max_by_key(|rule| (rule.prefix.len(), !rule.prefix.starts_with("*.")))
    }

    /// Where to pull `name` from, in order: the mirrors that serve a `kind`
    /// reference, then the primary location. No rule: `name` itself.
    pub fn pull_sources(
        &self,
        name: &RepositoryName,
        kind: RefKind,
    ) -> Result<Vec<PullSource>, ConfError> {
        let full = name.to_string();
        let Some(rule) = self.find(&full) else {
            return Ok(vec![PullSource {
                name: name.clone(),
                insecure: false,
                mirror: false,
            }]);
        };
        if rule.blocked {
            return Err(blocked(rule));
        }
        let mirrors: Vec<&Mirror> = if rule.mirror_by_digest_only {
            match kind {
                RefKind::Digest => rule.mirrors.iter().collect(),
                RefKind::Tag => Vec::new(),
            }
        } else {
            rule.mirrors.iter().filter(|m| m.serves(kind)).collect()
        };
        let mut sources = Vec::new();
        for mirror in mirrors {
            let source = self.source(rule, &full, name, &mirror.location, mirror.insecure, true)?;
            match source {
                Ok(source) => sources.push(source),
                Err(host_rule) => tracing::debug!(
                    "mirror {:?} of {name} is on a blocked host ({}); not tried",
                    mirror.location,
                    host_rule.origin
                ),
            }
        }
        match self.source(rule, &full, name, &rule.location, rule.insecure, false)? {
            Ok(primary) => sources.push(primary),
            Err(host_rule) if sources.is_empty() => return Err(blocked(host_rule)),
            Err(_) => {}
        }
        Ok(sources)
    }

    /// Where to push `name`: its primary location only.
    pub fn push_source(&self, name: &RepositoryName) -> Result<PullSource, ConfError> {
        let full = name.to_string();
        let Some(rule) = self.find(&full) else {
            return Ok(PullSource {
                name: name.clone(),
                insecure: false,
                mirror: false,
            });
        };
        if rule.blocked {
            return Err(blocked(rule));
        }
        self.source(rule, &full, name, &rule.location, rule.insecure, false)?
            .map_err(blocked)
    }

    /// `name` with `rule`'s prefix replaced by `location`; insecure if
    /// `insecure` or the rule of the new host says so. The inner error is
    /// the rule that blocks the new host.
    fn source(
        &self,
        rule: &Rule,
        full: &str,
        name: &RepositoryName,
        location: &str,
        insecure: bool,
        mirror: bool,
    ) -> Result<Result<PullSource, &Rule>, ConfError> {
        let rewritten = match match_len(full, &rule.prefix) {
            Some(matched) if !location.is_empty() => {
                let text = format!("{location}{}", &full[matched..]);
                let bad = |reason: String| ConfError::BadRewrite {
                    prefix: rule.prefix.clone(),
                    origin: rule.origin.clone(),
                    rewritten: text.clone(),
                    reason,
                };
                let (parsed, _) = reference::parse(&text).map_err(bad)?;
                if parsed.to_string() != text {
                    return Err(bad(format!(
                        "it would be read as {parsed} (a location names its host)"
                    )));
                }
                parsed
            }
            _ => name.clone(),
        };
        let host_rule = self.find(&rewritten.domain);
        if let Some(host_rule) = host_rule.filter(|r| r.blocked) {
            return Ok(Err(host_rule));
        }
        Ok(Ok(PullSource {
            insecure: insecure || host_rule.is_some_and(|r| r.insecure),
            name: rewritten,
            mirror,
        }))
    }
}

fn blocked(rule: &Rule) -> ConfError {
    ConfError::Blocked {
        prefix: rule.prefix.clone(),
        origin: rule.origin.clone(),
    }
}

/// How much of `name` (`HOST/PATH`) `prefix` matches, as containers/image's
/// `refMatchingPrefix`: all of it, or up to a `/` or `:` (so `example.com`
/// also matches `example.com:5000/x`, as there); a `*.DOMAIN` prefix
/// matches a host that ends in `.DOMAIN`.
fn match_len(name: &str, prefix: &str) -> Option<usize> {
    let boundary =
        |at: usize| at == name.len() || matches!(name.as_bytes()[at], b'/' | b':' | b'@');
    if prefix.starts_with("*.") {
        let domain = &prefix[1..];
        let at = name.find(domain)?;
        if name[..at].contains('/') {
            return None;
        }
        let end = at + domain.len();
        return boundary(end).then_some(end);
    }
    (name.starts_with(prefix) && boundary(prefix.len())).then_some(prefix.len())
}

/// The `*.conf` files of a drop-in directory, in lexical order.
fn drop_ins(dir: &Path) -> Result<Vec<PathBuf>, ConfError> {
    let io_error = |source| ConfError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            return Ok(Vec::new())
        }
        Err(e) => return Err(io_error(e)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error)?;
        let path = entry.path();
        if path.extension() != Some(std::ffi::OsStr::new("conf")) {
            continue;
        }
        // A link is followed; a directory (or a dangling link) is no file.
        if !fs::metadata(&path).is_ok_and(|m| !m.is_dir()) {
            continue;
        }
        if files.len() == MAX_DROP_INS {
            return Err(ConfError::TooManyDropIns {
                dir: dir.to_path_buf(),
                limit: MAX_DROP_INS,
            });
        }
        files.push(path);
    }
    files.sort();
    Ok(files)
}

/// A file's text; none when it does not exist.
fn read_bounded(path: &Path) -> Result<Option<String>, ConfError> {
    let io_error = |source| ConfError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = match bounded::read_file(path, MAX_CONF_FILE_BYTES).map_err(io_error)? {
        FileRead::Missing => return Ok(None),
        FileRead::TooLarge => {
            return Err(ConfError::TooLarge {
                path: path.to_path_buf(),
                limit: MAX_CONF_FILE_BYTES,
            })
        }
        FileRead::Bytes(bytes) => bytes,
    };
    String::from_utf8(bytes).map(Some).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1;
        ConfError::Syntax {
            path: path.to_path_buf(),
            line,
            column: 1,
            message: "not UTF-8".to_string(),
        }
    })
}

/// Version 1's lists, and the line they start on.
#[derive(Default)]
struct V1Lists {
    insecure: Vec<String>,
    block: Vec<String>,
    /// Where `[registries…]` is.
    span: Range<usize>,
    present: bool,
}

impl V1Lists {
    fn is_empty(&self) -> bool {
        !self.present
    }
}

type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// One file being read: its text (for line numbers) and name.
struct Parser<'a> {
    text: &'a str,
    file: &'a Path,
}

impl Parser<'_> {
    fn line(&self, span: Range<usize>) -> usize {
        let start = span.start.min(self.text.len());
        self.text.as_bytes()[..start]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    }

    fn syntax(&self, e: &toml::de::Error) -> ConfError {
        let mut start = e.span().map_or(0, |s| s.start).min(self.text.len());
        while !self.text.is_char_boundary(start) {
            start -= 1;
        }
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let column = self
            .text
            .get(line_start..start)
            .map_or(1, |s| s.chars().count() + 1);
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        ConfError::Syntax {
            path: self.file.to_path_buf(),
            line: self.line(start..start),
            column,
            message,
        }
    }

    fn invalid(&self, span: Range<usize>, message: String) -> ConfError {
        ConfError::Invalid {
            path: self.file.to_path_buf(),
            line: self.line(span),
            message,
        }
    }

    fn wrong_type(&self, key: &str, value: &Value<'_>, wanted: &str) -> ConfError {
        let got = match value.get_ref() {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        };
        self.invalid(value.span(), format!("{key:?} must be {wanted}, not {got}"))
    }

    fn string(&self, key: &str, value: &Value<'_>) -> Result<String, ConfError> {
        match value.get_ref() {
            DeValue::String(s) => Ok(s.to_string()),
            _ => Err(self.wrong_type(key, value, "a string")),
        }
    }

    fn boolean(&self, key: &str, value: &Value<'_>) -> Result<bool, ConfError> {
        match value.get_ref() {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.wrong_type(key, value, "a boolean (true or false)")),
        }
    }

    fn strings(&self, key: &str, value: &Value<'_>) -> Result<Vec<String>, ConfError> {
        let wanted = "an array of strings";
        match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(s) => Ok(s.to_string()),
                    _ => Err(self.wrong_type(key, item, wanted)),
                })
                .collect(),
            _ => Err(self.wrong_type(key, value, wanted)),
        }
    }

    fn table<'v, 'i>(&self, key: &str, value: &'v Value<'i>) -> Result<&'v DeTable<'i>, ConfError> {
        match value.get_ref() {
            DeValue::Table(table) => Ok(table),
            _ => Err(self.wrong_type(key, value, "a table")),
        }
    }

    /// An array of tables (`[[key]]`), each with its span.
    fn tables<'v, 'i>(
        &self,
        key: &Key<'_>,
        value: &'v Value<'i>,
    ) -> Result<Vec<(&'v DeTable<'i>, Range<usize>)>, ConfError> {
        let wanted = "an array of tables ([[…]])";
        let name = key.get_ref().as_ref();
        match value.get_ref() {
            DeValue::Array(items) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::Table(table) => Ok((table, self.table_span(key, item, table))),
                    _ => Err(self.wrong_type(name, item, wanted)),
                })
                .collect(),
            _ => Err(self.wrong_type(name, value, wanted)),
        }
    }

    /// Where a table starts, for messages: its own span, or its first key's
    /// when that comes earlier (a `[[header]]` may be spanned by its body).
    fn table_span(&self, key: &Key<'_>, item: &Value<'_>, table: &DeTable<'_>) -> Range<usize> {
        let first_key = table.iter().map(|(k, _)| k.span().start).min();
        let start = [Some(item.span().start), first_key]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(key.span().start);
        start..start
    }

    fn rule(&self, (table, span): (&DeTable<'_>, Range<usize>)) -> Result<Rule, ConfError> {
        let mut prefix = None;
        let mut location = String::new();
        let mut rule = Rule {
            prefix: String::new(),
            location: String::new(),
            insecure: false,
            blocked: false,
            mirror_by_digest_only: false,
            mirrors: Vec::new(),
            origin: Origin {
                file: self.file.to_path_buf(),
                line: self.line(span.clone()),
            },
        };
        let mut mirrors = Vec::new();
        for (key, value) in table.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "prefix" => prefix = Some((self.string(name, value)?, value.span())),
                "location" => location = self.location(name, value)?,
                "insecure" => rule.insecure = self.boolean(name, value)?,
                "blocked" => rule.blocked = self.boolean(name, value)?,
                "mirror-by-digest-only" => {
                    rule.mirror_by_digest_only = self.boolean(name, value)?
                }
                "mirror" => mirrors = self.tables(key, value)?,
                "pull-from-mirror" => {
                    return Err(self.invalid(
                        key.span(),
                        "pull-from-mirror is for a [[registry.mirror]], not its [[registry]]"
                            .to_string(),
                    ))
                }
                other => tracing::warn!(
                    "{}:{}: key {other:?} of a [[registry]] is unknown; ignored",
                    self.file.display(),
                    self.line(key.span())
                ),
            }
        }
        rule.prefix = match prefix.filter(|(text, _)| !text.is_empty()) {
            None if location.is_empty() => {
                return Err(self.invalid(
                    span,
                    "a [[registry]] needs a prefix or a location".to_string(),
                ));
            }
            None => location.clone(),
            Some((text, at)) => {
                let text = self.trimmed("prefix", &text, at.clone())?;
                if text.starts_with("*.") && text.contains(['/', '@', ':']) {
                    return Err(self.invalid(
                        at,
                        format!(
                            "prefix {text:?}: a wildcard prefix is a domain alone, \
                             as *.example.com"
                        ),
                    ));
                }
                if !text.starts_with("*.") && location.is_empty() {
                    return Err(self.invalid(
                        span,
                        format!(
                            "prefix {text:?} has no location (only a *.example.com prefix \
                             may go without one)"
                        ),
                    ));
                }
                text
            }
        };
        rule.location = location;
        for (table, mirror_span) in mirrors {
            rule.mirrors.push(self.mirror(&rule, table, mirror_span)?);
        }
        Ok(rule)
    }

    fn mirror(
        &self,
        rule: &Rule,
        table: &DeTable<'_>,
        span: Range<usize>,
    ) -> Result<Mirror, ConfError> {
        let mut mirror = Mirror {
            location: String::new(),
            insecure: false,
            pull_from_mirror: PullFromMirror::All,
        };
        let mut pull_from_mirror_set = None;
        for (key, value) in table.iter() {
            let name = key.get_ref().as_ref();
            match name {
                "location" => mirror.location = self.location(name, value)?,
                "insecure" => mirror.insecure = self.boolean(name, value)?,
                "pull-from-mirror" => {
                    let text = self.string(name, value)?;
                    mirror.pull_from_mirror = match text.as_str() {
                        "" | "all" => PullFromMirror::All,
                        "digest-only" => PullFromMirror::DigestOnly,
                        "tag-only" => PullFromMirror::TagOnly,
                        other => {
                            return Err(self.invalid(
                                value.span(),
                                format!(
                                    "pull-from-mirror {other:?}: expected \"all\", \
                                     \"digest-only\" or \"tag-only\""
                                ),
                            ))
                        }
                    };
                    if !text.is_empty() {
                        pull_from_mirror_set = Some(value.span());
                    }
                }
                other => tracing::warn!(
                    "{}:{}: key {other:?} of a [[registry.mirror]] is unknown; ignored",
                    self.file.display(),
                    self.line(key.span())
                ),
            }
        }
        if mirror.location.is_empty() {
            return Err(self.invalid(span, "a [[registry.mirror]] needs a location".to_string()));
        }
        if let Some(at) = pull_from_mirror_set.filter(|_| rule.mirror_by_digest_only) {
            return Err(self.invalid(
                at,
                format!(
                    "the [[registry]] with prefix {:?} has mirror-by-digest-only; its mirror {:?} \
                     may not set pull-from-mirror too",
                    rule.prefix, mirror.location
                ),
            ));
        }
        Ok(mirror)
    }

    /// A location: no URL scheme, trailing `/` dropped.
    fn location(&self, key: &str, value: &Value<'_>) -> Result<String, ConfError> {
        let text = self.string(key, value)?;
        self.trimmed(key, &text, value.span())
    }

    fn trimmed(&self, key: &str, text: &str, span: Range<usize>) -> Result<String, ConfError> {
        let trimmed = text.trim_end_matches('/');
        if trimmed.starts_with("http://") || trimmed.starts_with("https://") {
            return Err(self.invalid(
                span,
                format!("{key} {text:?}: URL schemes are not supported (write HOST[:PORT][/PATH])"),
            ));
        }
        Ok(trimmed.to_string())
    }

    /// `[registries.search]`, `[registries.insecure]`, `[registries.block]`.
    fn v1(&self, value: &Value<'_>) -> Result<V1Lists, ConfError> {
        let mut lists = V1Lists {
            span: value.span(),
            present: true,
            ..V1Lists::default()
        };
        for (key, list) in self.table("registries", value)?.iter() {
            let name = key.get_ref().as_ref();
            let mut registries = Vec::new();
            for (inner, value) in self.table(name, list)?.iter() {
                match inner.get_ref().as_ref() {
                    "registries" => registries = self.strings("registries", value)?,
                    other => tracing::debug!(
                        "{}:{}: key {other:?} of [registries.{name}] is not used",
                        self.file.display(),
                        self.line(inner.span())
                    ),
                }
            }
            match name {
                "insecure" => lists.insecure = registries,
                "block" => lists.block = registries,
                "search" => {}
                other => tracing::debug!(
                    "{}:{}: [registries.{other}] is not used",
                    self.file.display(),
                    self.line(key.span())
                ),
            }
        }
        Ok(lists)
    }

    /// Version 1's lists as rules, as containers/image converts them.
    fn v1_rules(&self, lists: &V1Lists) -> Result<Vec<Rule>, ConfError> {
        let mut rules: Vec<Rule> = Vec::new();
        let span = lists.span.clone();
        for (list, blocked) in [(&lists.block, true), (&lists.insecure, false)] {
            for entry in list {
                let location = self.trimmed("registries", entry, span.clone())?;
                if location.is_empty() {
                    continue;
                }
                let index = match rules.iter().position(|r| r.location == location) {
                    Some(index) => index,
                    None => {
                        rules.push(Rule {
                            prefix: location.clone(),
                            location,
                            insecure: false,
                            blocked: false,
                            mirror_by_digest_only: false,
                            mirrors: Vec::new(),
                            origin: Origin {
                                file: self.file.to_path_buf(),
                                line: self.line(span.clone()),
                            },
                        });
                        rules.len() - 1
                    }
                };
                if blocked {
                    rules[index].blocked = true;
                } else {
                    rules[index].insecure = true;
                }
            }
        }
        Ok(rules)
    }

    /// Two tables for one location must agree on `insecure` and `blocked`,
    /// as containers/image requires.
    fn check_conflicts(&self, rules: &[Rule]) -> Result<(), ConfError> {
        let key = |r: &Rule| {
            if r.location.is_empty() {
                r.prefix.clone()
            } else {
                r.location.clone()
            }
        };
        for (i, rule) in rules.iter().enumerate() {
            for other in &rules[..i] {
                if key(rule) != key(other) {
                    continue;
                }
                let what = if rule.insecure != other.insecure {
                    "insecure"
                } else if rule.blocked != other.blocked {
                    "blocked"
                } else {
                    continue;
                };
                return Err(ConfError::Invalid {
                    path: self.file.to_path_buf(),
                    line: rule.origin.line,
                    message: format!(
                        "registry {:?} is defined again with another {what:?} than on line {}",
                        key(rule),
                        other.origin.line
                    ),
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    fn conf(text: &str) -> RegistriesConf {
        RegistriesConf::parse(text, Path::new("/etc/r.conf")).unwrap()
    }

    fn parse_error(text: &str) -> String {
        RegistriesConf::parse(text, Path::new("/etc/r.conf"))
            .unwrap_err()
            .to_string()
    }

    fn name(text: &str) -> RepositoryName {
        reference::parse(text).unwrap().0
    }

    /// The sources as `mirror HOST/REPO` / `primary HOST/REPO (insecure)`.
    fn sources(conf: &RegistriesConf, image: &str, kind: RefKind) -> Vec<String> {
        conf.pull_sources(&name(image), kind)
            .unwrap()
            .iter()
            .map(|s| {
                if s.insecure {
                    format!("{s} (insecure)")
                } else {
                    s.to_string()
                }
            })
            .collect()
    }

    #[test]
    fn no_rule_is_the_name_itself() {
        let empty = RegistriesConf::default();
        assert_eq!(
            sources(&empty, "quay.io/a/b", RefKind::Tag),
            ["primary quay.io/a/b"]
        );
        let other = conf("[[registry]]\nprefix = \"example.com\"\nlocation = \"x.io\"\n");
        assert_eq!(
            sources(&other, "quay.io/a/b", RefKind::Digest),
            ["primary quay.io/a/b"]
        );
    }

    #[test]
    fn a_location_replaces_the_matched_prefix() {
        let c = conf(
            r#"
[[registry]]
prefix = "example.invalid/foo"
location = "127.0.0.1:5000/test/"
insecure = true
"#,
        );
        assert_eq!(
            sources(&c, "example.invalid/foo/img", RefKind::Tag),
            ["primary 127.0.0.1:5000/test/img (insecure)"]
        );
        assert_eq!(
            sources(&c, "example.invalid/foo", RefKind::Tag),
            ["primary 127.0.0.1:5000/test"]
                .map(|s| format!("{s} (insecure)"))
                .to_vec()
        );
        // A prefix matches whole components only.
        assert_eq!(
            sources(&c, "example.invalid/foobar/img", RefKind::Tag),
            ["primary example.invalid/foobar/img"]
        );
        // A location is the prefix when there is no prefix.
        let c = conf("[[registry]]\nlocation = \"r.io/ns\"\nblocked = true\n");
        assert_eq!(c.rules().next().unwrap().prefix, "r.io/ns");
    }

    #[test]
    fn the_longest_prefix_wins() {
        let c = conf(
            r#"
[[registry]]
prefix = "r.io"
location = "a.io"

[[registry]]
prefix = "r.io/team/app"
location = "c.io/app"

[[registry]]
prefix = "r.io/team"
location = "b.io/t"
"#,
        );
        assert_eq!(
            sources(&c, "r.io/team/app", RefKind::Tag),
            ["primary c.io/app"]
        );
        assert_eq!(
            sources(&c, "r.io/team/app/sub", RefKind::Tag),
            ["primary c.io/app/sub"]
        );
        assert_eq!(
            sources(&c, "r.io/team/other", RefKind::Tag),
            ["primary b.io/t/other"]
        );
        assert_eq!(sources(&c, "r.io/x", RefKind::Tag), ["primary a.io/x"]);
        // As in containers/image, a host prefix matches the host with a port.
        assert_eq!(
            sources(&c, "r.io:5000/x", RefKind::Tag),
            ["primary a.io:5000/x"]
        );
    }

    #[test]
    fn a_wildcard_prefix_matches_subdomains_only() {
        let c = conf(
            r#"
[[registry]]
prefix = "*.example.com"
insecure = true

[[registry]]
prefix = "*.mirrored.io"
location = "cache.local/m"
"#,
        );
        assert_eq!(
            sources(&c, "a.example.com/x/y", RefKind::Tag),
            ["primary a.example.com/x/y (insecure)"]
        );
        assert_eq!(
            sources(&c, "b.a.example.com:5000/x", RefKind::Tag),
            ["primary b.a.example.com:5000/x (insecure)"]
        );
        assert_eq!(
            sources(&c, "example.com/x", RefKind::Tag),
            ["primary example.com/x"]
        );
        assert_eq!(
            sources(&c, "notexample.com/x", RefKind::Tag),
            ["primary notexample.com/x"]
        );
        assert_eq!(
            sources(&c, "a.example.com.evil.io/x", RefKind::Tag),
            ["primary a.example.com.evil.io/x"]
        );
        // A path that mentions the domain is not a host in it.
        assert_eq!(
            sources(&c, "r.io/a.example.com/x", RefKind::Tag),
            ["primary r.io/a.example.com/x"]
        );
        assert_eq!(
            sources(&c, "q.mirrored.io/team/app", RefKind::Tag),
            ["primary cache.local/m/team/app"]
        );
        assert!(parse_error("[[registry]]\nprefix = \"*.example.com/x\"\n")
            .contains("/etc/r.conf:2: prefix \"*.example.com/x\": a wildcard prefix"));
    }

    #[test]
    fn a_blocked_prefix_names_the_rule() {
        let c = conf(
            "# a comment\n\n[[registry]]\nprefix = \"docker.io/library\"\nlocation = \
             \"docker.io/library\"\nblocked = true\n",
        );
        let err = c
            .pull_sources(&name("debian:12"), RefKind::Tag)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "blocked by the [[registry]] with prefix \"docker.io/library\" (/etc/r.conf:3)"
        );
        assert!(c.push_source(&name("debian")).is_err());
        assert!(c
            .pull_sources(&name("docker.io/team/app"), RefKind::Tag)
            .is_ok());
    }

    #[test]
    fn mirrors_come_first_and_a_digest_only_mirror_skips_tags() {
        let c = conf(
            r#"
[[registry]]
prefix = "quay.io/team"
location = "quay.io/team"

[[registry.mirror]]
location = "m1.local/q"
pull-from-mirror = "digest-only"

[[registry.mirror]]
location = "m2.local/q"
insecure = true

[[registry.mirror]]
location = "m3.local/q"
pull-from-mirror = "tag-only"
"#,
        );
        assert_eq!(
            sources(&c, "quay.io/team/app", RefKind::Tag),
            [
                "mirror m2.local/q/app (insecure)",
                "mirror m3.local/q/app",
                "primary quay.io/team/app"
            ]
        );
        assert_eq!(
            sources(&c, "quay.io/team/app", RefKind::Digest),
            [
                "mirror m1.local/q/app",
                "mirror m2.local/q/app (insecure)",
                "primary quay.io/team/app"
            ]
        );
        // A push goes to the primary only.
        assert_eq!(
            c.push_source(&name("quay.io/team/app")).unwrap().name,
            name("quay.io/team/app")
        );
    }

    #[test]
    fn mirror_by_digest_only_keeps_tags_off_every_mirror() {
        let c = conf(
            r#"
[[registry]]
location = "r.io"
mirror-by-digest-only = true
mirror = [{ location = "m1.local" }, { location = "m2.local", insecure = true }]
"#,
        );
        assert_eq!(sources(&c, "r.io/a", RefKind::Tag), ["primary r.io/a"]);
        assert_eq!(
            sources(&c, "r.io/a", RefKind::Digest),
            [
                "mirror m1.local/a",
                "mirror m2.local/a (insecure)",
                "primary r.io/a"
            ]
        );
        let err = parse_error(
            "[[registry]]\nlocation = \"r.io\"\nmirror-by-digest-only = true\n\
             [[registry.mirror]]\nlocation = \"m\"\npull-from-mirror = \"all\"\n",
        );
        assert!(err.starts_with("/etc/r.conf:6: "), "{err}");
        assert!(err.contains("may not set pull-from-mirror"), "{err}");
    }

    #[test]
    fn short_names_are_docker_io_library_names() {
        let c = conf(
            r#"
[[registry]]
prefix = "docker.io/library/debian"
location = "127.0.0.1:5000/test/debian-gzip"
insecure = true
"#,
        );
        // docker://debian:12 is docker.io/library/debian.
        assert_eq!(
            sources(&c, "debian:12", RefKind::Tag),
            ["primary 127.0.0.1:5000/test/debian-gzip (insecure)"]
        );
        assert_eq!(
            sources(
                &c,
                &format!("index.docker.io/debian@sha256:{HEX}"),
                RefKind::Digest
            ),
            ["primary 127.0.0.1:5000/test/debian-gzip (insecure)"]
        );
        assert_eq!(
            sources(&c, "debian-backports", RefKind::Tag),
            ["primary docker.io/library/debian-backports"]
        );
        // A rewrite to Docker Hub is reached at its API host.
        let c = conf("[[registry]]\nprefix = \"mirror.local/hub\"\nlocation = \"docker.io\"\n");
        let source = &c
            .pull_sources(&name("mirror.local/hub/library/alpine"), RefKind::Tag)
            .unwrap()[0];
        assert_eq!(source.name.to_string(), "docker.io/library/alpine");
        assert_eq!(source.name.api_host(), "registry-1.docker.io");
    }

    #[test]
    fn a_rewrite_to_a_name_without_a_host_is_refused() {
        let c = conf("[[registry]]\nprefix = \"r.io/x\"\nlocation = \"justaname\"\n");
        let err = c
            .pull_sources(&name("r.io/x/app"), RefKind::Tag)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"justaname/app\""), "{err}");
        assert!(err.contains("/etc/r.conf:1"), "{err}");
    }

    #[test]
    fn the_rule_of_a_sources_host_applies_to_it() {
        let c = conf(
            r#"
[[registry]]
prefix = "r.io"
location = "r.io"
[[registry.mirror]]
location = "bad.local/r"
[[registry.mirror]]
location = "plain.local/r"

[[registry]]
location = "bad.local"
blocked = true

[[registry]]
location = "plain.local"
insecure = true
"#,
        );
        assert_eq!(
            sources(&c, "r.io/a", RefKind::Tag),
            ["mirror plain.local/r/a (insecure)", "primary r.io/a"]
        );
    }

    #[test]
    fn a_later_drop_in_replaces_the_table_with_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("registries.conf");
        fs::write(
            &main,
            "unqualified-search-registries = [\"docker.io\"]\n\
             [[registry]]\nprefix = \"r.io\"\nlocation = \"main.local\"\n\
             [[registry]]\nprefix = \"s.io\"\nlocation = \"s.io\"\nblocked = true\n",
        )
        .unwrap();
        let d = dir.path().join(DROP_IN_DIR);
        fs::create_dir(&d).unwrap();
        fs::write(
            d.join("20-b.conf"),
            "[[registry]]\nprefix = \"r.io\"\nlocation = \"b.local\"\n",
        )
        .unwrap();
        fs::write(
            d.join("10-a.conf"),
            "[[registry]]\nprefix = \"r.io\"\nlocation = \"a.local\"\n\
             [[registry]]\nprefix = \"t.io\"\nlocation = \"t.local\"\n",
        )
        .unwrap();
        fs::write(d.join("30-c.conf.disabled"), "not toml [").unwrap();
        fs::create_dir(d.join("40-dir.conf")).unwrap();
        let env = Env {
            explicit: Some(main.clone()),
            xdg_config_home: None,
            home: None,
            system_file: PathBuf::from("/nonexistent/registries.conf"),
        };
        let c = RegistriesConf::load(&env).unwrap();
        assert_eq!(sources(&c, "r.io/x", RefKind::Tag), ["primary b.local/x"]);
        assert_eq!(sources(&c, "t.io/x", RefKind::Tag), ["primary t.local/x"]);
        assert!(c.pull_sources(&name("s.io/x"), RefKind::Tag).is_err());
        assert_eq!(
            c.files(),
            [main, d.join("10-a.conf"), d.join("20-b.conf")].as_slice()
        );
        let origin = &c.find("r.io/x").unwrap().origin;
        assert_eq!(origin.file, d.join("20-b.conf"));
        assert_eq!(origin.line, 1);
    }

    #[test]
    fn which_files_are_read() {
        let home = tempfile::tempdir().unwrap();
        let system = home.path().join("etc/registries.conf");
        let env = Env {
            explicit: None,
            xdg_config_home: None,
            home: Some(home.path().to_path_buf()),
            system_file: system.clone(),
        };
        let user_dir = home.path().join(".config/containers");
        // No user file: the system file, its drop-ins, then the user's.
        assert_eq!(
            env.plan(),
            Plan {
                main: system.clone(),
                main_required: false,
                drop_in_dirs: vec![
                    home.path().join("etc/registries.conf.d"),
                    user_dir.join(DROP_IN_DIR)
                ],
            }
        );
        assert_eq!(RegistriesConf::load(&env).unwrap().files().len(), 0);
        // A user file: it and its own drop-ins only.
        fs::create_dir_all(&user_dir).unwrap();
        fs::write(user_dir.join("registries.conf"), "").unwrap();
        assert_eq!(
            env.plan(),
            Plan {
                main: user_dir.join("registries.conf"),
                main_required: true,
                drop_in_dirs: vec![user_dir.join(DROP_IN_DIR)],
            }
        );
        // $XDG_CONFIG_HOME moves the user's file.
        let xdg = Env {
            xdg_config_home: Some(home.path().join("xdg")),
            ..env.clone()
        };
        assert_eq!(xdg.plan().main, system);
        // An explicit file wins, and must exist.
        let explicit = env.clone().with_file(Some(home.path().join("my.conf")));
        assert_eq!(explicit.plan().main, home.path().join("my.conf"));
        assert_eq!(
            explicit.plan().drop_in_dirs,
            [home.path().join(DROP_IN_DIR)]
        );
        let err = RegistriesConf::load(&explicit).unwrap_err().to_string();
        assert!(err.contains("my.conf: no such file"), "{err}");
    }

    #[test]
    fn a_malformed_file_is_an_error_naming_file_and_line() {
        let err = parse_error("[[registry]]\nprefix = \"r.io\"\nlocation = \"x\n");
        assert!(
            err.starts_with("/etc/r.conf:3:14: not valid TOML: "),
            "{err}"
        );
        let err = parse_error("[[registry]]\nlocation = \"r.io\"\ninsecure = \"yes\"\n");
        assert_eq!(
            err,
            "/etc/r.conf:3: \"insecure\" must be a boolean (true or false), not a string"
        );
        let err = parse_error("registry = 3\n");
        assert!(err.starts_with("/etc/r.conf:1: \"registry\" must be an array of tables"));
        let err = parse_error("\n\n[[registry]]\nprefix = \"r.io\"\n");
        assert!(
            err.starts_with("/etc/r.conf:3: prefix \"r.io\" has no location"),
            "{err}"
        );
        let err = parse_error("[[registry]]\nlocation = \"https://r.io\"\n");
        assert!(err.contains("URL schemes are not supported"), "{err}");
        let err = parse_error("[[registry]]\ninsecure = true\n");
        assert!(err.contains("needs a prefix or a location"), "{err}");
        let err = parse_error(
            "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\ninsecure = true\n",
        );
        assert!(
            err.starts_with("/etc/r.conf:3: a [[registry.mirror]] needs a location"),
            "{err}"
        );
        let err = parse_error(
            "[[registry]]\nlocation = \"r.io\"\n[[registry.mirror]]\nlocation = \"m\"\n\
             pull-from-mirror = \"sometimes\"\n",
        );
        assert!(err.starts_with("/etc/r.conf:5: pull-from-mirror \"sometimes\""));
        let err = parse_error("[[registry]]\nlocation = \"r.io\"\npull-from-mirror = \"all\"\n");
        assert!(err.contains("not its [[registry]]"), "{err}");
        let err = parse_error("aliases = [\"x\"]\n");
        assert!(err.contains("\"aliases\" must be a table"), "{err}");
        let err = parse_error(
            "[[registry]]\nlocation = \"r.io\"\n[[registry]]\nprefix = \"r.io/x\"\n\
             location = \"r.io\"\ninsecure = true\n",
        );
        assert!(err.contains("another \"insecure\" than on line 1"), "{err}");
        // Not UTF-8.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("r.conf");
        fs::write(&file, b"# ok\n\xff\n").unwrap();
        let err = RegistriesConf::load(&Env {
            explicit: Some(file),
            xdg_config_home: None,
            home: None,
            system_file: PathBuf::new(),
        })
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("r.conf:2:1: not valid TOML: not UTF-8"),
            "{err}"
        );
    }

    #[test]
    fn hostile_files_are_errors_not_crashes() {
        let deep = format!("x = {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        assert!(parse_error(&deep).starts_with("/etc/r.conf:1:"));
        let deep_table = format!("x = {}{}\n", "{a=".repeat(50_000), "}".repeat(50_000));
        assert!(parse_error(&deep_table).starts_with("/etc/r.conf:1:"));
        let err = parse_error("é = \"\u{1F600}\n");
        assert!(err.starts_with("/etc/r.conf:1:"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.conf");
        fs::write(&big, vec![b'#'; MAX_CONF_FILE_BYTES as usize + 1]).unwrap();
        let err = RegistriesConf::load(&Env {
            explicit: Some(big),
            xdg_config_home: None,
            home: None,
            system_file: PathBuf::new(),
        })
        .unwrap_err();
        assert!(matches!(err, ConfError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn what_real_files_hold_is_accepted() {
        // Debian's shortnames.conf drop-in and the keys of the stock file.
        let c = conf(
            r#"
unqualified-search-registries = ["registry.fedoraproject.org", "docker.io"]
short-name-mode = "enforcing"
credential-helpers = ["containers-auth.json"]
future-key = 1

[aliases]
  "debian" = "docker.io/library/debian"
  "ubi8/ubi" = "registry.access.redhat.com/ubi8/ubi"

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.com/bar"
"#,
        );
        assert_eq!(c.rules().count(), 1);
        // Version 1.
        let c = conf(
            r#"
[registries.search]
registries = ["docker.io"]
[registries.insecure]
registries = ["plain.local:5000", "both.local"]
[registries.block]
registries = ["evil.io", "both.local"]
"#,
        );
        assert_eq!(
            sources(&c, "plain.local:5000/a", RefKind::Tag),
            ["primary plain.local:5000/a (insecure)"]
        );
        assert!(c.pull_sources(&name("evil.io/a"), RefKind::Tag).is_err());
        let both = c.find("both.local/a").unwrap();
        assert!(both.blocked && both.insecure);
        let err = parse_error(
            "[registries.block]\nregistries = [\"a.io\"]\n[[registry]]\nlocation = \"b.io\"\n",
        );
        assert!(err.contains("may not be mixed"), "{err}");
    }

    #[test]
    fn the_first_table_with_a_prefix_wins_within_a_file() {
        let c = conf(
            "[[registry]]\nprefix = \"r.io\"\nlocation = \"one.local\"\n\
             [[registry]]\nprefix = \"r.io\"\nlocation = \"two.local\"\n",
        );
        assert_eq!(sources(&c, "r.io/a", RefKind::Tag), ["primary one.local/a"]);
    }

    #[test]
    fn prefix_matching_is_containers_images() {
        assert_eq!(match_len("r.io/a/b", "r.io"), Some(4));
        assert_eq!(match_len("r.io/a/b", "r.io/a"), Some(6));
        assert_eq!(match_len("r.io/a/b", "r.io/a/b"), Some(8));
        assert_eq!(match_len("r.io/ab", "r.io/a"), None);
        assert_eq!(match_len("r.io", "r.io/a"), None);
        assert_eq!(match_len("r.io:5000/a", "r.io"), Some(4));
        assert_eq!(match_len("x.r.io/a", "*.r.io"), Some(6));
        assert_eq!(match_len("x.r.io", "*.r.io"), Some(6));
        assert_eq!(match_len("x.r.iox/a", "*.r.io"), None);
        assert_eq!(match_len("r.io/a", "*.r.io"), None);
        // Only `*.` is a wildcard.
        assert_eq!(match_len("xr.io/a", "*r.io"), None);
    }
}
