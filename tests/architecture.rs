//! The layering of `vdm-backends` (docs/architecture.md): no two of its top-level modules import
//! each other, directly or through others. A module may use its own children; across modules,
//! imports go one way (config → data, model → config, train → model, …), so that each layer can
//! be read, tested and changed without the ones above it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Each top-level module of the crate at `src` and the top-level modules its files name with
/// `crate::` (in `use` lines, groups included, and in paths), comments and test modules excluded.
fn imports(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut files = vec![src.to_path_buf()];
    while let Some(path) = files.pop() {
        if path.is_dir() {
            files.extend(fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let relative = path.strip_prefix(src).unwrap();
        let module = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = module.trim_end_matches(".rs").to_string();
        let text = fs::read_to_string(&path).unwrap();
        let code: String = text
            .split("#[cfg(test)]")
            .next()
            .unwrap()
            .lines()
            .map(|line| line.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        let used = graph.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                // `crate::{a, b::c, d::{e, f}}`: the first segment of each top-level item.
                Some(group) => {
                    let (mut depth, mut end) = (0, group.len());
                    for (j, ch) in group.char_indices() {
                        match ch {
                            '{' => depth += 1,
                            '}' if depth == 0 => {
                                end = j;
                                break;
                            }
                            '}' => depth -= 1,
                            _ => {}
                        }
                    }
                    let mut items = Vec::new();
                    let (mut depth, mut start) = (0, 0);
                    for (j, ch) in group[..end].char_indices() {
                        match ch {
                            '{' => depth += 1,
                            '}' => depth -= 1,
                            ',' if depth == 0 => {
                                items.push(&group[start..j]);
                                start = j + 1;
                            }
                            _ => {}
                        }
                    }
                    items.push(&group[start..end]);
                    items.into_iter().map(|item| item.trim().split("::").next().unwrap()).collect()
                }
                None => vec![rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap()],
            };
            for name in names {
                let is_module = src.join(format!("{name}.rs")).exists() || src.join(name).is_dir();
                if is_module && name != module {
                    used.insert(name.to_string());
                }
            }
        }
    }
    graph
}

/// A cycle of `graph` as the modules along it, if there is one.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|n| n == node) {
            return Some(path[i..].iter().cloned().chain([node.to_string()]).collect());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    graph.keys().find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn the_backend_modules_import_each_other_one_way_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for crate_src in ["backends/src", "core/src"] {
        let graph = imports(&root.join(crate_src));
        assert!(graph.len() > 3, "{crate_src}: too few modules found: {graph:?}");
        if let Some(found) = cycle(&graph) {
            panic!("{crate_src}: the modules import each other in a circle: {}", found.join(" → "));
        }
    }
}

#[test]
fn a_circle_is_found() {
    let graph: BTreeMap<String, BTreeSet<String>> = [("a", "b"), ("b", "c"), ("c", "a"), ("d", "a")]
        .into_iter()
        .map(|(from, to)| (from.to_string(), BTreeSet::from([to.to_string()])))
        .collect();
    assert_eq!(cycle(&graph).unwrap(), ["a", "b", "c", "a"]);
    let mut acyclic = graph.clone();
    acyclic.remove("c");
    assert_eq!(cycle(&acyclic), None);
}
