//! The reference, `docs/reference.md`, is exactly what the code generates now, and the parts of
//! it written by hand in `shared/src/reference.rs` agree with the code they describe: the
//! `connect_error` messages, the ingress routes and bodies of the edge (through its OpenAPI
//! document), and the README's configuration table.

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

/// The routes of the ingress as its OpenAPI document has them (built from the edge's routes,
/// `bins/edge/src/ingress.rs`), and the fields of each body type (`contract::ingress`).
#[test]
fn the_reference_describes_every_ingress_route_and_body() {
    // Read as JSON, whose objects come out sorted by key: the comparisons below are of sorted
    // lists.
    let document =
        serde_json::to_value(switchboard_edge::ingress::openapi()).expect("the document serializes");
    let mut routed = Vec::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("a path item").keys() {
            routed.push((method.to_ascii_uppercase(), path.clone()));
        }
    }
    routed.sort();
    let mut documented: Vec<(String, String)> =
        INGRESS.iter().map(|r| (r.method.to_owned(), r.path.to_owned())).collect();
    documented.sort();
    assert_eq!(
        documented, routed,
        "INGRESS in shared/src/reference.rs must list the routes of bins/edge/src/ingress.rs; then \
         run `{REGENERATE}`"
    );

    for route in INGRESS {
        let operation = &document["paths"][route.path][route.method.to_ascii_lowercase()];
        let in_query: Vec<(&str, bool)> = operation["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|parameter| parameter["in"] == "query")
            .map(|parameter| (parameter["name"].as_str().unwrap_or_default(), parameter["required"] == true))
            .collect();
        let documented: Vec<(&str, bool)> = route.query.iter().map(|f| (f.name, f.required)).collect();
        assert_eq!(
            documented, in_query,
            "INGRESS in shared/src/reference.rs: the query parameters of {} {} must be those of the \
             OpenAPI document, as (name, required), in order; then run `{REGENERATE}`",
            route.method, route.path
        );
        let Some(request) = route.request else {
            assert!(
                operation.get("requestBody").is_none() && route.body.is_empty(),
                "{} {}: a body in the code or in INGRESS but not both",
                route.method,
                route.path
            );
            continue;
        };
        let reference = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            .as_str()
            .unwrap_or_else(|| panic!("{} {} takes no JSON body", route.method, route.path));
        assert_eq!(reference, format!("#/components/schemas/{request}"), "{} {}", route.method, route.path);
        let schema = &document["components"]["schemas"][request];
        let required: Vec<&str> =
            schema["required"].as_array().into_iter().flatten().filter_map(|name| name.as_str()).collect();
        let actual: Vec<(&str, bool)> = schema["properties"]
            .as_object()
            .expect("a body has properties")
            .keys()
            .map(|name| (name.as_str(), required.contains(&name.as_str())))
            .collect();
        // Already sorted: JSON objects are read sorted by key.
        let mut documented: Vec<(&str, bool)> = route.body.iter().map(|f| (f.name, f.required)).collect();
        documented.sort_unstable();
        assert_eq!(
            documented, actual,
            "INGRESS in shared/src/reference.rs: the body of {} {} must list the fields of {request} \
             (shared/src/contract/ingress.rs) as (JSON name, required); then run `{REGENERATE}`",
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

/// The text between `header` and the next line that is a lone `}`.
fn item_body<'a>(source: &'a str, header: &str) -> &'a str {
    let start = source.find(header).unwrap_or_else(|| panic!("`{header}` is not in the source"));
    let rest = &source[start + header.len()..];
    &rest[..rest.find("\n}").unwrap_or(rest.len())]
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
