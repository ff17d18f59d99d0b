//! The library's modules import only downward: the graph of `crate::`
//! paths between its top-level modules (outside `#[cfg(test)]` modules and
//! comments, names re-exported at the crate root counted as their module)
//! has no cycle. Run with `--nocapture` to print the graph and the layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Graph = BTreeMap<String, BTreeSet<String>>;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// The top-level modules: each file and folder of `src/` but the root.
fn modules(src: &Path) -> BTreeSet<String> {
    std::fs::read_dir(src)
        .unwrap()
        .filter_map(|e| {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            if e.file_type().unwrap().is_dir() {
                Some(name)
            } else {
                let stem = name.strip_suffix(".rs")?;
                (stem != "lib" && stem != "main").then(|| stem.to_owned())
            }
        })
        .collect()
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `text` without `#[cfg(test)] mod name { ... }` blocks and comment
/// lines.
fn code_of(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let head = after.find('{').map(|b| &after[..b]);
        let is_mod =
            head.is_some_and(|h| h.split_whitespace().any(|w| w == "mod") && !h.contains(';'));
        if !is_mod {
            out.push_str("#[cfg(test)]");
            rest = &after["#[cfg(test)]".len()..];
            continue;
        }
        let open = after.find('{').unwrap();
        let mut depth = 0;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The first path segment of every `crate::` path in `code`, and of every
/// item of a `crate::{...}` group.
fn crate_paths(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before_ok = !rest[..at].chars().next_back().is_some_and(is_ident);
        rest = &rest[at + "crate::".len()..];
        if !before_ok {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let first: String = item.trim().chars().take_while(|&c| is_ident(c)).collect();
                if !first.is_empty() {
                    found.push(first);
                }
            }
        } else {
            let first: String = rest.chars().take_while(|&c| is_ident(c)).collect();
            if !first.is_empty() {
                found.push(first);
            }
        }
    }
    found
}

/// Names re-exported at the crate root (`pub use module::{A, B}` in
/// lib.rs), with the module they come from.
fn root_aliases(src: &Path, mods: &BTreeSet<String>) -> BTreeMap<String, String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let mut alias = BTreeMap::new();
    for stmt in code_of(&lib).split(';') {
        let Some(at) = stmt.find("pub use ") else {
            continue;
        };
        let path = stmt[at + "pub use ".len()..].trim();
        let path = path.strip_prefix("crate::").unwrap_or(path);
        let Some((module, names)) = path.split_once("::") else {
            continue;
        };
        if !mods.contains(module) {
            continue;
        }
        for name in names.split(|c: char| !is_ident(c)) {
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                alias.entry(name.to_owned()).or_insert(module.to_owned());
            }
        }
    }
    alias
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    if dir.is_file() {
        out.push(dir.to_owned());
        return;
    }
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

fn graph() -> Graph {
    let src = src();
    let mods = modules(&src);
    let alias = root_aliases(&src, &mods);
    let mut g = Graph::new();
    for m in &mods {
        let mut files = Vec::new();
        let dir = src.join(m);
        let at = if dir.is_dir() {
            dir
        } else {
            src.join(format!("{m}.rs"))
        };
        rust_files(&at, &mut files);
        let edges = g.entry(m.clone()).or_default();
        for f in files {
            let code = code_of(&std::fs::read_to_string(&f).unwrap());
            for name in crate_paths(&code) {
                let to = alias.get(&name).cloned().unwrap_or(name);
                if mods.contains(&to) && &to != m {
                    edges.insert(to);
                }
            }
        }
    }
    g
}

/// The modules in layers, lowest first (each imports only from layers
/// below it); `Err` with the modules left on cycles.
fn layers(g: &Graph) -> Result<Vec<Vec<String>>, BTreeSet<String>> {
    let mut placed = BTreeSet::new();
    let mut out = Vec::new();
    while placed.len() < g.len() {
        let layer: Vec<String> = g
            .iter()
            .filter(|(m, deps)| !placed.contains(*m) && deps.iter().all(|d| placed.contains(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if layer.is_empty() {
            return Err(g.keys().filter(|m| !placed.contains(*m)).cloned().collect());
        }
        placed.extend(layer.iter().cloned());
        out.push(layer);
    }
    Ok(out)
}

#[test]
fn modules_import_only_downward() {
    let g = graph();
    for (m, deps) in &g {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!(
            "{m} -> {}",
            if deps.is_empty() {
                "-".into()
            } else {
                deps.join(", ")
            }
        );
    }
    assert!(g.len() > 10, "the modules were not found: {g:?}");
    assert!(
        g["system"].contains("exec"),
        "the scan misses imports: {g:?}"
    );
    match layers(&g) {
        Ok(layers) => {
            for (i, l) in layers.iter().enumerate() {
                println!("layer {i}: {}", l.join(", "));
            }
        }
        Err(stuck) => panic!("import cycle among: {stuck:?} (the graph is printed above)"),
    }
}

#[test]
fn a_cycle_is_found() {
    let mut g = Graph::new();
    g.entry("a".into()).or_default().insert("b".into());
    g.entry("b".into()).or_default().insert("c".into());
    g.entry("c".into()).or_default().insert("a".into());
    g.entry("leaf".into()).or_default();
    assert_eq!(layers(&g), Err(["a", "b", "c"].map(String::from).into()));
    g.get_mut("c").unwrap().clear();
    assert_eq!(
        layers(&g).unwrap(),
        [vec!["c", "leaf"], vec!["b"], vec!["a"]]
    );
}

#[test]
fn paths_in_test_modules_and_comments_do_not_count() {
    let code = "use crate::a::X;\n// crate::b\n#[cfg(test)]\nmod tests {\n use crate::c;\n { }\n}\nfn f() { crate::{d::Y, e}; }";
    assert_eq!(crate_paths(&code_of(code)), ["a", "d", "e"]);
}
