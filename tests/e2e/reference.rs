//! The reference, `docs/reference.md`, is exactly what the code generates now, and the parts of
//! it written by hand in `shared/src/reference.rs` agree with the code they describe: the
//! `connect_error` messages and the ingress routes and bodies of the edge, and the README's
//! configuration table.

use std::path::PathBuf;

use switchboard::{
    config::SETTINGS,
    reference::{CONNECT_ERRORS, INGRESS, OUTPUT, REGENERATE, generate},
};

fn read(relative: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

#[test]
fn the_reference_matches_the_code() {
    switchboard_tests::assert_generated_file_is_current(
        OUTPUT,
        &generate(),
        "the code (contract types, config::SETTINGS, shared/src/reference.rs)",
        REGENERATE,
    );
}

/// The messages of the edge's `ConnectRefused` (bins/edge/src/connection.rs).
#[test]
fn the_reference_names_every_connect_error() {
    let source = read("bins/edge/src/connection.rs");
    let body = item_body(&source, "pub enum ConnectRefused {");
    let sent: Vec<&str> = body
        .lines()
        .filter_map(|line| line.trim().strip_prefix("#[error(\"")?.strip_suffix("\")]"))
        .collect();
    let documented: Vec<&str> = CONNECT_ERRORS.iter().map(|(message, _)| *message).collect();
    assert_eq!(
        documented, sent,
        "CONNECT_ERRORS in shared/src/reference.rs must list the messages of ConnectRefused \
         (bins/edge/src/connection.rs), in its order; then run `{REGENERATE}`"
    );
}

/// The routes of bins/edge/src/ingress.rs, and the fields of each body type.
#[test]
fn the_reference_describes_every_ingress_route_and_body() {
    let source = read("bins/edge/src/ingress.rs");
    let routed: Vec<(String, String)> = source
        .lines()
        .filter_map(|line| {
            let rest = line.trim().strip_prefix(".route(\"")?;
            let (path, rest) = rest.split_once("\", ")?;
            let (method, _) = rest.split_once('(')?;
            Some((method.to_ascii_uppercase(), without_parameter_names(path)))
        })
        .collect();
    let documented: Vec<(String, String)> =
        INGRESS.iter().map(|r| (r.method.to_owned(), without_parameter_names(r.path))).collect();
    assert_eq!(
        documented, routed,
        "INGRESS in shared/src/reference.rs must list the routes of bins/edge/src/ingress.rs, in its \
         order; then run `{REGENERATE}`"
    );

    for route in INGRESS {
        let Some(request) = route.request else {
            assert!(
                route.body.is_empty(),
                "{} {} has no request type but documents a body",
                route.method,
                route.path
            );
            continue;
        };
        let fields = struct_fields(&source, request);
        let documented: Vec<(&str, bool)> = route.body.iter().map(|f| (f.name, f.required)).collect();
        let actual: Vec<(&str, bool)> =
            fields.iter().map(|(name, required)| (name.as_str(), *required)).collect();
        assert_eq!(
            documented, actual,
            "INGRESS in shared/src/reference.rs: the body of {} {} must list the fields of {request} \
             (bins/edge/src/ingress.rs) as (JSON name, required), in order; then run `{REGENERATE}`",
            route.method, route.path
        );
    }
}

/// The README's configuration table names every setting once and shows the same defaults.
#[test]
fn the_reference_and_the_readme_agree_on_the_configuration() {
    let readme = read("README.md");
    let section = readme
        .split("\n## Configuration\n")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README.md has a ## Configuration section");
    let mut seen = Vec::new();
    for row in section.lines().filter(|line| line.starts_with("| `")) {
        let cells: Vec<&str> = split_row(row);
        let [variables, defaults, ..] = cells[..] else {
            panic!("README configuration row without a default: {row}")
        };
        let keys: Vec<&str> = variables.split('`').skip(1).step_by(2).collect();
        let values = split_defaults(defaults, keys.len()).unwrap_or_else(|| {
            panic!("README.md: cannot tell which default of {defaults:?} is whose in: {row}")
        });
        for (key, value) in keys.iter().zip(values) {
            let setting = SETTINGS.iter().find(|s| s.key == *key).unwrap_or_else(|| {
                panic!("README.md documents {key}, which is not in switchboard::config::SETTINGS")
            });
            assert_eq!(
                value, setting.default,
                "README.md and config::SETTINGS (shared/src/config.rs, docs/reference.md) disagree on the \
                 default of {key}"
            );
            seen.push(*key);
        }
    }
    let missing: Vec<&str> = SETTINGS.iter().map(|s| s.key).filter(|key| !seen.contains(key)).collect();
    assert!(missing.is_empty(), "README.md's configuration table does not document {missing:?}");
    let mut distinct = seen.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        seen.len(),
        "README.md's configuration table lists a variable twice: {seen:?}"
    );
}

/// `/api/v1/matches/{match_id}` and `/api/v1/matches/{matchId}` are the same route.
fn without_parameter_names(path: &str) -> String {
    let mut out = String::new();
    let mut inside = false;
    for c in path.chars() {
        match c {
            '{' => {
                inside = true;
                out.push(c);
            }
            '}' => {
                inside = false;
                out.push(c);
            }
            _ if inside => {}
            _ => out.push(c),
        }
    }
    out
}

/// The text between `header` and the next line that is a lone `}`.
fn item_body<'a>(source: &'a str, header: &str) -> &'a str {
    let start = source.find(header).unwrap_or_else(|| panic!("`{header}` is not in the source"));
    let rest = &source[start + header.len()..];
    &rest[..rest.find("\n}").unwrap_or(rest.len())]
}

/// The JSON names of a struct's fields (camelCase unless renamed) and whether each is required
/// (neither an `Option` nor `#[serde(default)]`).
fn struct_fields(source: &str, name: &str) -> Vec<(String, bool)> {
    let body = item_body(source, &format!("struct {name} {{"));
    let (mut fields, mut rename, mut default) = (Vec::new(), None, false);
    for line in body.lines().map(str::trim) {
        if let Some(renamed) = line.strip_prefix("#[serde(rename = \"").and_then(|r| r.split_once('"')) {
            rename = Some(renamed.0.to_owned());
        } else if line.starts_with("#[serde(default") {
            default = true;
        } else if let Some((field, ty)) = line.split_once(": ") {
            let json = rename.take().unwrap_or_else(|| camel_case(field));
            fields.push((json, !(default || ty.starts_with("Option<"))));
            default = false;
        }
    }
    fields
}

fn camel_case(snake: &str) -> String {
    let mut parts = snake.split('_');
    let mut out = parts.next().unwrap_or_default().to_owned();
    for part in parts {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

/// The cells of a Markdown table row, `\|` kept inside its cell.
fn split_row(row: &str) -> Vec<&str> {
    let inner = row.trim().trim_start_matches('|').trim_end_matches('|');
    let mut cells = Vec::new();
    let mut start = 0;
    let bytes = inner.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'|' && (i == 0 || bytes[i - 1] != b'\\') {
            cells.push(inner[start..i].trim());
            start = i + 1;
        }
    }
    cells.push(inner[start..].trim());
    cells
}

/// One default per variable of a row: the whole cell for one variable; for several, the cell
/// split at ` / `, or its values in backticks separated by spaces.
fn split_defaults(cell: &str, count: usize) -> Option<Vec<String>> {
    if count == 1 {
        return Some(vec![cell.to_owned()]);
    }
    let by_slash: Vec<String> = cell.split(" / ").map(str::to_owned).collect();
    if by_slash.len() == count {
        return Some(by_slash);
    }
    let by_space: Vec<String> = cell.split(' ').map(str::to_owned).collect();
    (by_space.len() == count && by_space.iter().all(|v| v.starts_with('`') && v.ends_with('`')))
        .then_some(by_space)
}
