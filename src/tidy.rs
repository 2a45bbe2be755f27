//! Checks of the source itself, in the manner of rust-analyzer's `tidy.rs`: the map in
//! `lib.rs` is a fact (a module imports only modules listed above it), every file says what it
//! is for (`//!`), and no file or function grows past what a reader takes in at once.

use std::path::{Path, PathBuf};

/// The longest file in `src/`, in lines.
const MAX_FILE_LINES: usize = 700;

/// The longest function outside tests, in lines.
const MAX_FUNCTION_LINES: usize = 60;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `dir`, sorted.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(sources(&path));
        } else if path.extension().is_some_and(|extension| extension == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level modules in the order `lib.rs` lists them.
fn module_order(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|line| line.strip_prefix("pub mod "))
        .filter_map(|rest| rest.strip_suffix(';'))
        .map(String::from)
        .collect()
}

/// The top-level module a file of `src/` belongs to (`None` for `lib.rs`, `main.rs` and this
/// file).
fn module_of(file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src()).ok()?;
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main" | "tidy")).then(|| name.to_string())
}

/// `text` without its line comments (so that prose naming a module is not an import).
fn code(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The modules `code` names after `crate::`, with the line they are on: `crate::a::b` and
/// each first name of `crate::{a, b::{c, d}}`.
fn crate_paths(code: &str) -> Vec<(usize, String)> {
    let name = |text: &str| -> String {
        text.trim_start()
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect()
    };
    let mut found = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let line = code[..at].lines().count().max(1);
        let rest = &code[at + "crate::".len()..];
        let Some(group) = rest.strip_prefix('{') else {
            found.push((line, name(rest)));
            continue;
        };
        // The first name of each item at the group's own depth.
        let (mut depth, mut item_start) = (0, true);
        for (index, c) in group.char_indices() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => item_start = true,
                c if item_start && !c.is_whitespace() => {
                    item_start = false;
                    found.push((line, name(&group[index..])));
                }
                _ => {}
            }
        }
    }
    found
}

/// Every import of a module listed later in `lib.rs`, as `file:line: a -> b`.
fn backward_imports(order: &[String], files: &[(PathBuf, String)]) -> Vec<String> {
    let position = |name: &str| order.iter().position(|module| module == name);
    let mut backward = Vec::new();
    for (file, text) in files {
        let Some(module) = module_of(file) else {
            continue;
        };
        let Some(mine) = position(&module) else {
            continue;
        };
        for (line, target) in crate_paths(&code(text)) {
            if position(&target).is_some_and(|theirs| theirs > mine) {
                backward.push(format!(
                    "{}:{line}: {module} imports {target}, which lib.rs lists after it",
                    file.display()
                ));
            }
        }
    }
    backward
}

/// The functions of `text` longer than `limit` lines outside its tests, as `name (lines)`.
/// The code is rustfmt's: a function ends at the first `}` at its own indentation.
fn long_functions(text: &str, limit: usize) -> Vec<String> {
    let lines: Vec<&str> = text.lines().collect();
    let tests = lines
        .windows(2)
        .position(|pair| {
            pair[0].trim() == "#[cfg(test)]" && pair[1].trim_start().starts_with("mod ")
        })
        .unwrap_or(lines.len());
    let mut long = Vec::new();
    for (start, line) in lines[..tests].iter().enumerate() {
        let trimmed = line.trim_start();
        let signature = [
            "fn ",
            "pub fn ",
            "pub(crate) fn ",
            "async fn ",
            "pub async fn ",
        ]
        .iter()
        .find_map(|prefix| trimmed.strip_prefix(prefix));
        let Some(signature) = signature else { continue };
        let indent = &line[..line.len() - trimmed.len()];
        let closing = format!("{indent}}}");
        let Some(length) = lines[start..tests]
            .iter()
            .position(|line| *line == closing)
            .map(|end| end + 1)
        else {
            continue;
        };
        if length > limit && !lines[start].trim_end().ends_with(';') {
            let name: String = signature
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            long.push(format!("{name} ({length} lines)"));
        }
    }
    long
}

fn read_sources() -> Vec<(PathBuf, String)> {
    sources(&src())
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).unwrap();
            (file, text)
        })
        .collect()
}

#[test]
fn every_module_imports_only_modules_listed_above_it_in_lib_rs() {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    let order = module_order(&lib);
    assert!(order.len() > 10, "lib.rs lists its modules: {order:?}");
    let backward = backward_imports(&order, &read_sources());
    assert!(backward.is_empty(), "{}", backward.join("\n"));
}

#[test]
fn a_backward_import_is_found_wherever_it_is_written() {
    let order: Vec<String> = ["clock", "report", "store"].map(String::from).into();
    let file = |name: &str, text: &str| (src().join(name), text.to_string());
    let files = [
        file("clock.rs", "use crate::store::Store;\n"),
        file(
            "report/mod.rs",
            "use crate::{\n    clock::{Clock, Instant},\n    store,\n};\n// crate::store in prose\n",
        ),
        file("store.rs", "use crate::report::Report;\nfn f() { crate::clock::now() }\n"),
    ];
    let backward = backward_imports(&order, &files);
    assert_eq!(backward.len(), 2, "{backward:?}");
    assert!(backward[0].ends_with("clock.rs:1: clock imports store, which lib.rs lists after it"));
    assert!(backward[1].contains("report/mod.rs:1: report imports store"));
}

#[test]
fn every_file_says_what_it_is_for_and_stays_short() {
    let mut problems = Vec::new();
    for (file, text) in read_sources() {
        let name = file.strip_prefix(src()).unwrap().display().to_string();
        if !text.starts_with("//!") {
            problems.push(format!("{name}: no //! saying what the file is for"));
        }
        let lines = text.lines().count();
        if lines > MAX_FILE_LINES {
            problems.push(format!("{name}: {lines} lines (at most {MAX_FILE_LINES})"));
        }
        // A file of tests (`mod tests;`) is measured as the tests inside a file are: not.
        let functions = if name.ends_with("tests.rs") {
            Vec::new()
        } else {
            long_functions(&text, MAX_FUNCTION_LINES)
        };
        for function in functions {
            problems.push(format!("{name}: {function}, at most {MAX_FUNCTION_LINES}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn a_long_function_is_measured_to_its_closing_brace() {
    let body = "        x += 1;\n".repeat(70);
    let text = format!(
        "fn short() {{\n}}\n\nimpl A {{\n    pub fn long(&self) {{\n{body}    }}\n}}\n\n#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n"
    );
    assert_eq!(long_functions(&text, 60), ["long (72 lines)"]);
}
