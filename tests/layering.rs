//! The source tree keeps its pipeline shape: every top-level file or folder
//! of `src/` is one stage, stages are ranked bottom to top, and a module may
//! import (`crate::…`, or `super::…` that leaves its stage) only from its
//! own stage or a lower one. With a strict order there can be no cycle
//! between stages. A new stage must be given its place in `STAGES`.
//! Inside a folder, its files and subfolders import each other without a
//! cycle either, as far as direct imports show: an import of an item the
//! folder's `mod.rs` re-exports (`crate::source::Layout`) is not traced to
//! the child that defines it, so a cycle through one passes unseen. One
//! does today: `source::layout` ↔ `source::reference` (a bundle's layout
//! names the image its blobs come from, which a reference opens).
//! Test modules (`#[cfg(test)] mod …`) may reach anywhere, as `tests/` and
//! `fuzz/` do.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top: a stage may use only the stages before it (docs/design.md,
/// "Source layout").
const STAGES: &[&str] = &[
    "limits", "digest", "error", "blob", "sys", "tar", "layer", "oci", "source", "image", "cache",
    "tree", "merge", "rootfs", "view", "serve", "bundle", "cli",
];

/// Crate-root files that are not stages: the module list and the binary.
const NOT_STAGES: &[&str] = &["lib", "main"];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/cache/reader.rs` → `["cache", "reader"]`.
fn module_path(file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src_dir()).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code outside comments, string literals and `#[cfg(test)]` modules.
fn code_without_tests(text: &str) -> String {
    let mut code = String::new();
    let mut chars = text.chars().peekable();
    // Strip comments and strings first, keeping line structure.
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut last = ' ';
                for c in chars.by_ref() {
                    if last == '*' && c == '/' {
                        break;
                    }
                    if c == '\n' {
                        code.push('\n');
                    }
                    last = c;
                }
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if c == '\n' {
                        code.push('\n');
                    }
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                code.push_str("\"\"");
            }
            _ => code.push(c),
        }
    }
    let mut kept = String::new();
    let mut depth: i64 = 0;
    let mut skip_above: Option<i64> = None;
    let mut test_attribute = false;
    for line in code.lines() {
        let opens = line.matches('{').count() as i64;
        let closes = line.matches('}').count() as i64;
        if let Some(floor) = skip_above {
            depth += opens - closes;
            if depth <= floor {
                skip_above = None;
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with("#[cfg(test)]") {
            test_attribute = true;
            continue;
        }
        if test_attribute && (trimmed.starts_with("mod ") || trimmed.starts_with("pub mod ")) {
            test_attribute = false;
            if opens > closes {
                skip_above = Some(depth);
                depth += opens - closes;
            }
            continue;
        }
        test_attribute = false;
        depth += opens - closes;
        kept.push_str(line);
        kept.push('\n');
    }
    kept
}

/// Every `crate::a::b` and `super::…` path in `code`, with `use` groups
/// (`crate::a::{b, c::d}`) expanded one level, as module paths from the
/// crate root.
fn imported_paths(code: &str, module: &[String]) -> Vec<(Vec<String>, usize)> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        if !code.is_char_boundary(i) {
            i += 1;
            continue;
        }
        let rest = &code[i..];
        let starts = (rest.starts_with("crate::") || rest.starts_with("super::"))
            && (i == 0 || !is_ident(bytes[i - 1]) && bytes[i - 1] != b':');
        if !starts {
            i += 1;
            continue;
        }
        let line = code[..i].matches('\n').count() + 1;
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or(rest.len());
        let mut segments: Vec<String> = rest[..end]
            .split("::")
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
        // Resolve to a path from the crate root: each `super` leaves one module.
        let mut base: Vec<String> = module.to_vec();
        if segments.first().is_some_and(|s| s == "crate") {
            base.clear();
            segments.remove(0);
        }
        while segments.first().is_some_and(|s| s == "super") {
            segments.remove(0);
            base.pop();
        }
        let mut path = base;
        path.extend(segments);
        let after = &rest[end..];
        if after.starts_with('{') {
            let close = after.find('}').unwrap_or(after.len());
            for part in after[1..close].split(',') {
                let name = part.split(" as ").next().unwrap_or("").trim();
                if name.is_empty() || name == "self" {
                    found.push((path.clone(), line));
                } else {
                    let mut p = path.clone();
                    p.extend(name.split("::").map(str::to_string));
                    found.push((p, line));
                }
            }
        } else {
            found.push((path, line));
        }
        i += end.max(1);
    }
    found
}

fn rank(stage: &str) -> Option<usize> {
    STAGES.iter().position(|s| *s == stage)
}

#[test]
fn every_stage_of_src_has_a_place_in_the_order() {
    let mut unplaced = BTreeSet::new();
    for entry in fs::read_dir(src_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if !NOT_STAGES.contains(&name.as_str()) && rank(&name).is_none() {
            unplaced.insert(name);
        }
    }
    assert!(
        unplaced.is_empty(),
        "stages missing from STAGES in tests/layering.rs: {unplaced:?}"
    );
}

#[test]
fn no_stage_imports_a_stage_above_it() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut upward = Vec::new();
    for file in &files {
        let module = module_path(file);
        let Some(stage) = module.first() else {
            continue;
        };
        let Some(own_rank) = rank(stage) else {
            continue; // lib.rs, main.rs
        };
        let code = code_without_tests(&fs::read_to_string(file).unwrap());
        for (path, line) in imported_paths(&code, &module) {
            let Some(target) = path.first() else {
                continue;
            };
            if let Some(target_rank) = rank(target) {
                if target_rank > own_rank {
                    upward.push(format!(
                        "{}:{line}: {stage} imports {} (a higher stage)",
                        file.strip_prefix(src_dir()).unwrap().display(),
                        path.join("::")
                    ));
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that go up a stage:\n{}",
        upward.join("\n")
    );
}

#[test]
fn the_import_scanner_sees_groups_super_and_skips_tests() {
    let module = vec!["cache".to_string(), "reader".to_string()];
    let code = code_without_tests(
        "use crate::tree::{layout::X, path};\nuse super::residency; // crate::cli\n\
         let s = \"crate::serve\";\n#[cfg(test)]\nmod tests {\n    use crate::serve::fs;\n}\n",
    );
    let paths: Vec<String> = imported_paths(&code, &module)
        .into_iter()
        .map(|(p, _)| p.join("::"))
        .collect();
    assert_eq!(paths, ["tree::layout::X", "tree::path", "cache::residency"]);
}

/// A folder of `src/` (its module path) → the edges between its children
/// (files and subfolders), each with the first import that makes it.
type FolderEdges = BTreeMap<Vec<String>, BTreeMap<(String, String), String>>;

/// Every edge between two children of one folder: a module under child `a`
/// importing a path under child `b` of the same folder.
fn folder_edges(files: &[PathBuf]) -> FolderEdges {
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(f)).collect();
    let is_folder = |m: &[String]| src_dir().join(m.join("/")).is_dir();
    let mut edges = FolderEdges::new();
    for file in files {
        let module = module_path(file);
        if module.first().and_then(|s| rank(s)).is_none() {
            continue;
        }
        let code = code_without_tests(&fs::read_to_string(file).unwrap());
        for (path, line) in imported_paths(&code, &module) {
            // The deepest folder holding both, and the child of it on each side.
            let shared = module.iter().zip(&path).take_while(|(a, b)| a == b).count();
            let folder = &module[..shared];
            if shared == 0 || !is_folder(folder) {
                continue;
            }
            let (Some(from), Some(to)) = (module.get(shared), path.get(shared)) else {
                continue; // the folder's own mod.rs, or an item it defines
            };
            let mut child = folder.to_vec();
            child.push(to.clone());
            if !modules.contains(&child) && !is_folder(&child) {
                continue; // an item of the folder's mod.rs
            }
            let site = format!(
                "{}:{line} imports {}",
                file.strip_prefix(src_dir()).unwrap().display(),
                path.join("::")
            );
            edges
                .entry(folder.to_vec())
                .or_default()
                .entry((from.clone(), to.clone()))
                .or_insert(site);
        }
    }
    edges
}

/// The cycles among one folder's children: each strongly connected set of
/// more than one child, found by following edges both ways.
fn cycles(edges: &BTreeMap<(String, String), String>) -> Vec<BTreeSet<String>> {
    let reach = |start: &String, forward: bool| {
        let mut seen = BTreeSet::from([start.clone()]);
        let mut todo = vec![start.clone()];
        while let Some(at) = todo.pop() {
            for (a, b) in edges.keys() {
                let (from, to) = if forward { (a, b) } else { (b, a) };
                if *from == at && seen.insert(to.clone()) {
                    todo.push(to.clone());
                }
            }
        }
        seen
    };
    let nodes: BTreeSet<&String> = edges.keys().flat_map(|(a, b)| [a, b]).collect();
    let mut found: Vec<BTreeSet<String>> = Vec::new();
    for node in nodes {
        let both: BTreeSet<String> = reach(node, true)
            .intersection(&reach(node, false))
            .cloned()
            .collect();
        if both.len() > 1 && !found.contains(&both) {
            found.push(both);
        }
    }
    found
}

#[test]
fn no_folder_has_an_import_cycle_among_its_files() {
    let mut files = Vec::new();
    rust_files(&src_dir(), &mut files);
    files.sort();
    let mut report = Vec::new();
    for (folder, edges) in folder_edges(&files) {
        for cycle in cycles(&edges) {
            let sites: Vec<&str> = edges
                .iter()
                .filter(|((a, b), _)| cycle.contains(a) && cycle.contains(b))
                .map(|(_, site)| site.as_str())
                .collect();
            report.push(format!(
                "{}: {:?}\n    {}",
                folder.join("::"),
                cycle,
                sites.join("\n    ")
            ));
        }
    }
    assert!(
        report.is_empty(),
        "import cycles inside a folder:\n{}",
        report.join("\n")
    );
}

#[test]
fn the_cycle_finder_finds_a_loop_of_three_and_nothing_in_a_chain() {
    let edges = |pairs: &[(&str, &str)]| -> BTreeMap<(String, String), String> {
        pairs
            .iter()
            .map(|(a, b)| ((a.to_string(), b.to_string()), String::new()))
            .collect()
    };
    let looped = cycles(&edges(&[("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")]));
    assert_eq!(
        looped,
        [BTreeSet::from(["a".to_string(), "b".into(), "c".into()])]
    );
    assert!(cycles(&edges(&[("a", "b"), ("b", "c"), ("a", "c")])).is_empty());
}
