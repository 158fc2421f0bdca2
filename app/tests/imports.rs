//! No import circles: within each crate, no source file uses another that uses it back,
//! directly or through others. An edge goes from a file to the file that defines what it
//! names by a `crate::…`, `super::…`, `self::…` or child-module path (a `use` or a path in
//! code), following re-exports (`pub use`) to where the item is defined; declaring a child
//! module or re-exporting from it is not an edge. Test code (`#[cfg(test)]` modules and
//! `tests` files) is left out: a test of a module may use anything.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path inside a crate: `[]` the root, `["report", "html"]` `report/html.rs`.
type Module = Vec<String>;

/// The library source directories of the workspace's crates.
const CRATES: [&str; 8] = [
    "app/src",
    "coordinator/src",
    "coordinator/live/src",
    "coordinator/report/src",
    "worker/src",
    "shared/core/src",
    "shared/data/src",
    "proto/src",
];

/// Source text without comments, string and character literals (each replaced by an
/// empty literal), so that paths are only looked for in code.
fn strip(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = String::with_capacity(source.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b')
            && !out.chars().last().is_some_and(ident)
            && raw_string_end(&chars, i).is_some()
        {
            i = raw_string_end(&chars, i).unwrap_or(chars.len());
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < chars.len() {
                match chars[i] {
                    '\\' => i += 2,
                    '"' => {
                        i += 1;
                        break;
                    }
                    _ => i += 1,
                }
            }
            out.push_str("\"\"");
        } else if c == '\'' && next == Some('\\') {
            i += 2;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            i += 1;
            out.push_str("' '");
        } else if c == '\'' && chars.get(i + 2) == Some(&'\'') {
            i += 3;
            out.push_str("' '");
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Where the raw string starting at `i` (`r"…"`, `r#"…"#`, `br"…"`) ends, if one does.
fn raw_string_end(chars: &[char], mut i: usize) -> Option<usize> {
    if chars[i] == 'b' {
        i += 1;
    }
    if chars.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let mut hashes = 0;
    while chars.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    if chars.get(i) != Some(&'"') {
        return None;
    }
    i += 1;
    while i < chars.len() {
        if chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) {
            return Some(i + 1 + hashes);
        }
        i += 1;
    }
    Some(chars.len())
}

/// `text` without its `#[cfg(test)] mod NAME { … }` blocks, and the names of the
/// `#[cfg(test)] mod NAME;` children it declares.
fn without_tests(text: &str) -> (String, Vec<String>) {
    let mut out = text.to_string();
    let mut test_children = Vec::new();
    let mut from = 0;
    while let Some(found) = out[from..].find("#[cfg(test)]") {
        let start = from + found;
        let rest = out[start + "#[cfg(test)]".len()..].trim_start();
        let rest_start = out.len() - rest.len();
        let after_visibility = match rest.strip_prefix("pub") {
            Some(tail) if tail.trim_start().starts_with('(') => {
                let tail = tail.trim_start();
                tail.find(')').map_or(tail, |close| &tail[close + 1..])
            }
            Some(tail) => tail,
            None => rest,
        }
        .trim_start();
        let Some(declaration) = after_visibility.strip_prefix("mod ") else {
            from = start + 1;
            continue;
        };
        let name: String = declaration.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        let after_name = declaration.trim_start()[name.len()..].trim_start();
        if after_name.starts_with(';') {
            test_children.push(name);
            from = start + 1;
            continue;
        }
        let Some(open) = out[rest_start..].find('{').map(|o| rest_start + o) else { break };
        let mut depth = 0;
        let mut end = out.len();
        for (offset, c) in out[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + offset + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        out.replace_range(start..end, "");
        from = start;
    }
    (out, test_children)
}

/// Every `.rs` file of a library's source tree (no `main.rs`, no `bin/`), by module.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut found = BTreeMap::new();
    let mut pending = vec![src.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path != src.join("bin") {
                    pending.push(path);
                }
                continue;
            }
            let Ok(relative) = path.strip_prefix(src) else { continue };
            if path.extension().is_none_or(|e| e != "rs") || relative == Path::new("main.rs") {
                continue;
            }
            let mut module: Module =
                relative.with_extension("").iter().map(|part| part.to_string_lossy().into_owned()).collect();
            if module.last().is_some_and(|last| last == "lib" || last == "mod") {
                module.pop();
            }
            found.insert(module, path);
        }
    }
    found
}

/// The paths a text names: `a::b::{c, d::e as f}` gives `a::b::c` and `a::b::d::e`, each
/// as segments. Paths that start after `::` (`::redis::…`) are another crate's.
fn paths(text: &str) -> Vec<Vec<String>> {
    let chars: Vec<char> = text.chars().collect();
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    let mut found = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let starts = ident(chars[i])
            && !chars[i].is_ascii_digit()
            && (i == 0 || !ident(chars[i - 1]))
            && !(i >= 2 && chars[i - 1] == ':' && chars[i - 2] == ':');
        if !starts {
            i += 1;
            continue;
        }
        let begin = i;
        while i < chars.len() && ident(chars[i]) {
            i += 1;
        }
        let mut end = i;
        while chars.get(end) == Some(&':') && chars.get(end + 1) == Some(&':') {
            let after = end + 2;
            match chars.get(after) {
                Some('{') => {
                    let mut depth = 0;
                    let mut close = chars.len();
                    for (k, c) in chars.iter().enumerate().skip(after) {
                        match c {
                            '{' => depth += 1,
                            '}' => {
                                depth -= 1;
                                if depth == 0 {
                                    close = k + 1;
                                    break;
                                }
                            }
                            _ => {}
                        }
                    }
                    end = close;
                    break;
                }
                Some(c) if ident(*c) || *c == '*' => {
                    end = after;
                    while end < chars.len() && (ident(chars[end]) || chars[end] == '*') {
                        end += 1;
                    }
                }
                _ => break,
            }
        }
        if end > i {
            let text: String = chars[begin..end].iter().collect();
            found.extend(expand(&text));
        }
        i = end.max(i);
    }
    found
}

/// `a::{b, c::{d, e}}` as `[a, b]`, `[a, c, d]`, `[a, c, e]`; a trailing `self` is its
/// prefix, and `x as y` is `x`.
fn expand(text: &str) -> Vec<Vec<String>> {
    // `x as y` → `x`, then no whitespace.
    let mut words = Vec::new();
    let mut tokens = text.split_whitespace().peekable();
    while let Some(word) = tokens.next() {
        if word == "as" {
            // The alias, and any `,` or `}` glued to it, which belong to the group.
            if let Some(alias) = tokens.next() {
                words.push(alias.trim_start_matches(|c: char| c.is_alphanumeric() || c == '_').to_string());
            }
        } else {
            words.push(word.to_string());
        }
    }
    let text = words.concat();
    let Some(open) = text.find('{') else {
        let mut segments: Vec<String> = text.split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
        if segments.len() > 1 && segments.last().is_some_and(|s| s == "self") {
            segments.pop();
        }
        return vec![segments];
    };
    let prefix: Vec<String> = text[..open].split("::").filter(|s| !s.is_empty()).map(str::to_string).collect();
    let inner = &text[open + 1..text.rfind('}').unwrap_or(text.len())];
    let mut parts = Vec::new();
    let (mut depth, mut current) = (0, String::new());
    for c in inner.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            _ => {}
        }
        if c == ',' && depth == 0 {
            parts.push(std::mem::take(&mut current));
        } else {
            current.push(c);
        }
    }
    parts.push(current);
    let mut out = Vec::new();
    for part in parts.iter().filter(|p| !p.is_empty()) {
        for tail in expand(part) {
            let mut path: Vec<String> = prefix.iter().cloned().chain(tail).collect();
            if path.len() > 1 && path.last().is_some_and(|s| s == "self") {
                path.pop();
            }
            out.push(path);
        }
    }
    out
}

/// One crate's files, the edges between them, and the circles they form.
#[derive(Debug, Default)]
struct Imports {
    edges: BTreeMap<Module, BTreeSet<Module>>,
    modules: BTreeSet<Module>,
}

/// Whether `module` is test code: a `tests` module or file, or under a `#[cfg(test)]` one.
fn is_test(module: &Module, test_modules: &BTreeSet<Module>) -> bool {
    module.iter().any(|part| part == "tests")
        || (1..=module.len()).any(|k| test_modules.contains(&module[..k].to_vec()))
}

fn analyse(src: &Path) -> Imports {
    let files = modules(src);
    let mut texts: BTreeMap<Module, String> = BTreeMap::new();
    let mut test_modules = BTreeSet::new();
    for (module, path) in &files {
        let source = std::fs::read_to_string(path).unwrap_or_default();
        let (text, test_children) = without_tests(&strip(&source));
        for child in test_children {
            test_modules.insert(module.iter().cloned().chain([child]).collect::<Module>());
        }
        texts.insert(module.clone(), text);
    }
    let known: BTreeSet<Module> = files.keys().filter(|m| !is_test(m, &test_modules)).cloned().collect();
    let children_of = |text: &str| -> BTreeSet<String> {
        let mut children = BTreeSet::new();
        for (at, _) in text.match_indices("mod ") {
            if at > 0 && text[..at].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            let name: String =
                text[at + 4..].trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if text[at + 4..].trim_start()[name.len()..].trim_start().starts_with(';') {
                children.insert(name);
            }
        }
        children
    };
    // A path from `module` (whose children are `children`) as segments from the root.
    let absolute = |module: &Module, segments: &[String], children: &BTreeSet<String>| -> Option<Vec<String>> {
        let first = segments.first()?;
        match first.as_str() {
            "crate" => Some(segments[1..].to_vec()),
            "self" => Some(module.iter().chain(&segments[1..]).cloned().collect()),
            "super" => {
                let mut base = module.clone();
                let mut rest = segments;
                while rest.first().is_some_and(|s| s == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
                Some(base.into_iter().chain(rest.iter().cloned()).collect())
            }
            name if children.contains(name) => Some(module.iter().chain(segments).cloned().collect()),
            _ => None,
        }
    };
    // Re-exports: per module, an item name and the absolute path it stands for.
    let mut reexports: BTreeMap<Module, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut code: BTreeMap<Module, String> = BTreeMap::new();
    for (module, text) in &texts {
        let children = children_of(text);
        let mut rest = text.clone();
        while let Some((start, end, statement)) = next_pub_use(&rest) {
            for segments in expand(&statement) {
                if let (Some(name), Some(target)) = (segments.last(), absolute(module, &segments, &children)) {
                    reexports.entry(module.clone()).or_default().insert(name.clone(), target);
                }
            }
            rest.replace_range(start..end, "");
        }
        code.insert(module.clone(), rest);
    }
    let resolve = |path: Vec<String>| -> Module {
        let mut path = path;
        for _ in 0..16 {
            let mut k = 0;
            while k < path.len() && files.contains_key(&path[..k + 1]) {
                k += 1;
            }
            let module = path[..k].to_vec();
            match path.get(k).and_then(|item| reexports.get(&module).and_then(|r| r.get(item))) {
                Some(target) => path = target.iter().chain(&path[k + 1..]).cloned().collect(),
                None => return module,
            }
        }
        path
    };
    let mut imports = Imports { modules: known.clone(), ..Imports::default() };
    for (module, text) in &code {
        if !known.contains(module) {
            continue;
        }
        let children = children_of(&texts[module]);
        let mut targets: Vec<Module> =
            paths(text).iter().filter_map(|segments| absolute(module, segments, &children).map(&resolve)).collect();
        // A name this module re-exports and also uses itself is a use of where it is defined.
        for (item, target) in reexports.get(module).into_iter().flatten() {
            if uses_name(text, item) {
                targets.push(resolve(target.clone()));
            }
        }
        for target in targets {
            if &target != module && known.contains(&target) {
                imports.edges.entry(module.clone()).or_default().insert(target);
            }
        }
    }
    imports
}

/// Whether `text` names `item` as a whole identifier, not as the tail of a path.
fn uses_name(text: &str, item: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    text.match_indices(item).any(|(at, _)| {
        let before = &text[..at];
        let after = &text[at + item.len()..];
        !before.chars().last().is_some_and(ident) && !before.ends_with("::") && !after.chars().next().is_some_and(ident)
    })
}

/// The first `pub use …;` (any visibility but private) of `text`: its range and its path.
fn next_pub_use(text: &str) -> Option<(usize, usize, String)> {
    let mut from = 0;
    while let Some(found) = text[from..].find("pub") {
        let start = from + found;
        from = start + 3;
        if start > 0 && text[..start].chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let mut rest = text[start + 3..].trim_start();
        if rest.starts_with('(') {
            let Some(close) = rest.find(')') else { continue };
            rest = rest[close + 1..].trim_start();
        }
        let Some(statement) = rest.strip_prefix("use ") else { continue };
        let Some(semicolon) = statement.find(';') else { continue };
        let end = text.len() - statement.len() + semicolon + 1;
        return Some((start, end, statement[..semicolon].to_string()));
    }
    None
}

/// The strongly connected components of more than one module (Tarjan), each sorted.
fn circles(imports: &Imports) -> Vec<Vec<Module>> {
    struct Walk<'a> {
        imports: &'a Imports,
        index: BTreeMap<&'a Module, usize>,
        low: BTreeMap<&'a Module, usize>,
        stack: Vec<&'a Module>,
        on_stack: BTreeSet<&'a Module>,
        found: Vec<Vec<Module>>,
    }
    fn visit<'a>(walk: &mut Walk<'a>, module: &'a Module) {
        let next = walk.index.len();
        walk.index.insert(module, next);
        walk.low.insert(module, next);
        walk.stack.push(module);
        walk.on_stack.insert(module);
        for target in walk.imports.edges.get(module).into_iter().flatten() {
            if !walk.index.contains_key(target) {
                visit(walk, target);
                let low = walk.low[module].min(walk.low[target]);
                walk.low.insert(module, low);
            } else if walk.on_stack.contains(target) {
                let low = walk.low[module].min(walk.index[target]);
                walk.low.insert(module, low);
            }
        }
        if walk.low[module] == walk.index[module] {
            let mut component = Vec::new();
            while let Some(member) = walk.stack.pop() {
                walk.on_stack.remove(member);
                component.push(member.clone());
                if member == module {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                walk.found.push(component);
            }
        }
    }
    let mut walk = Walk {
        imports,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for module in &imports.modules {
        if !walk.index.contains_key(module) {
            visit(&mut walk, module);
        }
    }
    walk.found
}

fn name(module: &Module) -> String {
    if module.is_empty() { "(root)".to_string() } else { module.join("::") }
}

/// Each circle of `src` as one line: its files, then the edges inside it.
fn described_circles(src: &Path) -> Vec<String> {
    let imports = analyse(src);
    circles(&imports)
        .into_iter()
        .map(|component| {
            let members: BTreeSet<&Module> = component.iter().collect();
            let edges: Vec<String> = component
                .iter()
                .flat_map(|from| {
                    imports
                        .edges
                        .get(from)
                        .into_iter()
                        .flatten()
                        .filter(|to| members.contains(to))
                        .map(move |to| format!("{} → {}", name(from), name(to)))
                })
                .collect();
            format!(
                "{}: {} ({})",
                src.display(),
                component.iter().map(name).collect::<Vec<_>>().join(", "),
                edges.join("; ")
            )
        })
        .collect()
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut found = Vec::new();
    for src in CRATES {
        let imports = analyse(&root.join(src));
        assert!(imports.modules.len() > 3, "{src}: only {} modules read", imports.modules.len());
        assert!(!imports.edges.is_empty(), "{src}: no imports found");
        found.extend(described_circles(&root.join(src)));
    }
    assert!(found.is_empty(), "import circles:\n{}", found.join("\n"));
}

#[test]
fn the_check_finds_planted_circles_and_not_their_lookalikes() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let src = dir.path();
    let write = |path: &str, text: &str| {
        let path = src.join(path);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("directories");
        std::fs::write(path, text).expect("file");
    };
    write(
        "lib.rs",
        "mod a;\nmod b;\nmod c;\nmod d;\nmod e;\npub use e::Thing;\n// crate::a::x in a comment\nfn f() { let s = \"crate::b::y\"; let c = '\"'; }\n",
    );
    // a ↔ b through a `use` group and a path in code.
    write("a.rs", "use crate::{b::{self, Item as Other}, d};\npub fn x() {}\n");
    write("b.rs", "pub struct Item;\nfn g() { crate::a::x(); }\n");
    // c → d only, through a name c re-exports and uses; d's test module uses c, which is
    // not an edge.
    write("d.rs", "pub struct Y;\nuse crate::Thing;\n#[cfg(test)]\nmod tests {\n    use crate::c;\n}\n");
    // e re-exports from its child; the child uses e's parent; `crate::Thing` from d
    // resolves to e::inner, not to the root.
    write("e.rs", "mod inner;\npub use inner::Thing;\n");
    write("e/inner.rs", "pub struct Thing;\nfn h() { let _ = ::redis::Value::Nil; }\n");
    write("c.rs", "pub use crate::d::Y;\nfn k(_: Y) {}\n");
    let imports = analyse(src);
    let module = |path: &[&str]| path.iter().map(|s| s.to_string()).collect::<Module>();
    assert!(imports.edges[&module(&["a"])].contains(&module(&["b"])));
    assert!(imports.edges[&module(&["a"])].contains(&module(&["d"])));
    assert!(imports.edges[&module(&["c"])].contains(&module(&["d"])), "a re-exported name in use");
    assert!(imports.edges[&module(&["b"])].contains(&module(&["a"])));
    let from_d: Vec<&Module> = imports.edges[&module(&["d"])].iter().collect();
    assert_eq!(from_d, vec![&module(&["e", "inner"])], "re-exports followed, a test module no edge");
    assert!(
        !imports.edges.contains_key(&module(&[])),
        "comments, strings and re-exports are no edges: {:?}",
        imports.edges
    );
    assert_eq!(circles(&imports), vec![vec![module(&["a"]), module(&["b"])]]);
    let described = described_circles(src);
    assert_eq!(described.len(), 1);
    assert!(described[0].contains("a → b") && described[0].contains("b → a"), "{described:?}");
}
