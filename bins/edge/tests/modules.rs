//! The edge's modules import each other without a circle (issue 15, "Structure"): each does
//! one thing, and what it needs lies below it. Read from the sources: every path a module
//! names through `crate::`, `super::` or a child module counts as an import of the module that
//! holds the item; a `mod` declaration does not. A child naming its parent counts too, so a
//! family's helpers live in a module of their own (`events::handler`), not in `mod.rs`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::Path,
};

use syn::visit::Visit;

/// A module's path from the crate root (`[]` for `lib.rs`, `["events", "handler"]`).
type Module = Vec<String>;

#[test]
fn no_module_imports_one_that_imports_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = BTreeMap::new();
    read_modules(&src, &mut Vec::new(), &mut files);
    assert!(files.len() > 20, "the edge's modules were not found under {}", src.display());
    let modules: BTreeSet<Module> = files.keys().cloned().collect();

    let mut imports: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &files {
        let mut paths = Paths { scope: module.clone(), found: Vec::new() };
        paths.visit_file(file);
        let targets = imports.entry(module.clone()).or_default();
        for path in paths.found {
            if let Some(target) = holder(&path, &modules)
                && target != *module
            {
                targets.insert(target);
            }
        }
    }

    if let Some(circle) = find_circle(&imports) {
        let names: Vec<String> = circle.iter().map(name).collect();
        panic!("these edge modules import each other in a circle: {}", names.join(" -> "));
    }
    // The check must be able to see an import at all: the Socket.IO layer admits through
    // `connection`.
    assert!(
        imports[&vec!["socket_io".to_owned()]].contains(&vec!["connection".to_owned()]),
        "the imports were not read: {imports:?}"
    );
}

/// The test itself: a circle is found, and named in order.
#[test]
fn a_circle_is_found() {
    let module = |name: &str| vec![name.to_owned()];
    let mut imports: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    imports.entry(module("a")).or_default().insert(module("b"));
    imports.entry(module("b")).or_default().insert(module("c"));
    imports.entry(module("c")).or_default().insert(module("a"));
    imports.entry(module("d")).or_default().insert(module("a"));
    let circle = find_circle(&imports).expect("a circle");
    assert_eq!(circle.iter().map(name).collect::<Vec<_>>(), ["a", "b", "c", "a"]);
    imports.get_mut(&module("c")).expect("c").clear();
    assert_eq!(find_circle(&imports), None);
}

fn name(module: &Module) -> String {
    if module.is_empty() { "lib".to_owned() } else { module.join("::") }
}

/// Parses every module file under `dir` (`lib.rs`, `x.rs`, `x/mod.rs`, `x/y.rs`); `main.rs`
/// is the binary, not a module of the library.
fn read_modules(dir: &Path, parent: &mut Module, files: &mut BTreeMap<Module, syn::File>) {
    let mut entries: Vec<_> = fs::read_dir(dir).expect("read the source directory").flatten().collect();
    entries.sort_by_key(|e| e.path());
    for entry in entries {
        let path = entry.path();
        let stem = path.file_stem().and_then(|s| s.to_str()).expect("a file name").to_owned();
        if path.is_dir() {
            parent.push(stem);
            read_modules(&path, parent, files);
            parent.pop();
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("rs") || (parent.is_empty() && stem == "main") {
            continue;
        }
        let mut module = parent.clone();
        if !(stem == "mod" || (parent.is_empty() && stem == "lib")) {
            module.push(stem);
        }
        let source = fs::read_to_string(&path).expect("read a source file");
        let file = syn::parse_file(&source).unwrap_or_else(|e| panic!("parse {}: {e}", path.display()));
        files.insert(module, file);
    }
}

/// The module a path names an item of: the longest prefix of it that is a module.
fn holder(path: &Module, modules: &BTreeSet<Module>) -> Option<Module> {
    (0..=path.len()).rev().map(|n| path[..n].to_vec()).find(|prefix| modules.contains(prefix))
}

/// Collects the absolute module paths a file names, in the scope of its (inline) modules.
struct Paths {
    scope: Module,
    found: Vec<Module>,
}

impl Paths {
    /// `crate::a::b`, `super::a`, `self::a` or `a::b` (a child module of the scope), as a path
    /// from the crate root; `None` for anything else (other crates, local names).
    fn absolute(&self, segments: &[String]) -> Option<Module> {
        let (first, rest) = segments.split_first()?;
        match first.as_str() {
            "crate" => Some(rest.to_vec()),
            "self" => Some([self.scope.clone(), rest.to_vec()].concat()),
            "super" => {
                let mut base = self.scope.clone();
                base.pop()?;
                let mut path = rest.to_vec();
                while path.first().map(String::as_str) == Some("super") {
                    base.pop()?;
                    path.remove(0);
                }
                Some([base, path].concat())
            }
            _ if rest.is_empty() => None,
            _ => Some([self.scope.clone(), segments.to_vec()].concat()),
        }
    }

    fn add(&mut self, segments: &[String]) {
        if let Some(path) = self.absolute(segments) {
            self.found.push(path);
        }
    }

    fn use_tree(&mut self, prefix: &mut Vec<String>, tree: &syn::UseTree) {
        match tree {
            syn::UseTree::Path(p) => {
                prefix.push(p.ident.to_string());
                self.use_tree(prefix, &p.tree);
                prefix.pop();
            }
            syn::UseTree::Name(n) => self.add_named(prefix, n.ident.to_string()),
            syn::UseTree::Rename(r) => self.add_named(prefix, r.ident.to_string()),
            syn::UseTree::Glob(_) => self.add(&[prefix.as_slice(), &["*".to_owned()]].concat()),
            syn::UseTree::Group(g) => g.items.iter().for_each(|item| self.use_tree(prefix, item)),
        }
    }

    fn add_named(&mut self, prefix: &[String], name: String) {
        // `use super::{self, x}` names the prefix itself.
        let segments = if name == "self" { prefix.to_vec() } else { [prefix, &[name]].concat() };
        self.add(&segments);
    }
}

impl<'ast> Visit<'ast> for Paths {
    fn visit_item_use(&mut self, item: &'ast syn::ItemUse) {
        self.use_tree(&mut Vec::new(), &item.tree);
    }

    fn visit_path(&mut self, path: &'ast syn::Path) {
        let segments: Vec<String> = path.segments.iter().map(|s| s.ident.to_string()).collect();
        self.add(&segments);
        syn::visit::visit_path(self, path);
    }

    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        self.scope.push(item.ident.to_string());
        syn::visit::visit_item_mod(self, item);
        self.scope.pop();
    }
}

/// A circle in the import graph, as the modules along it with the first repeated at the end.
fn find_circle(imports: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<Module>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn walk(
        module: &Module,
        imports: &BTreeMap<Module, BTreeSet<Module>>,
        marks: &mut BTreeMap<Module, Mark>,
        stack: &mut Vec<Module>,
    ) -> Option<Vec<Module>> {
        match marks.get(module) {
            Some(Mark::Done) => return None,
            Some(Mark::Open) => {
                let start = stack.iter().position(|m| m == module).expect("an open module is on the stack");
                return Some([&stack[start..], std::slice::from_ref(module)].concat());
            }
            None => {}
        }
        marks.insert(module.clone(), Mark::Open);
        stack.push(module.clone());
        for next in imports.get(module).into_iter().flatten() {
            if let Some(circle) = walk(next, imports, marks, stack) {
                return Some(circle);
            }
        }
        stack.pop();
        marks.insert(module.clone(), Mark::Done);
        None
    }
    let mut marks = BTreeMap::new();
    imports.keys().find_map(|module| walk(module, imports, &mut marks, &mut Vec::new()))
}
