//! docs/architecture.md names every source file of the server, and names
//! none that does not exist, so the walk through the folders stays true.

use std::collections::BTreeSet;
use std::path::Path;

use echo_tests::process::workspace_root;

fn rust_files(dir: &Path, root: &Path, found: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, root, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.insert(path.strip_prefix(root).unwrap().display().to_string());
        }
    }
}

#[test]
fn the_architecture_guide_names_every_server_file_and_only_those() {
    let src = workspace_root().join("services/echo-server/src");
    let mut files = BTreeSet::new();
    rust_files(&src, &src, &mut files);
    let guide = std::fs::read_to_string(workspace_root().join("docs/architecture.md")).unwrap();
    let named: BTreeSet<String> = guide
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|word| word.ends_with(".rs") && word.len() > ".rs".len() && !word.contains(' '))
        .map(str::to_owned)
        .collect();
    let unnamed: Vec<_> = files.difference(&named).collect();
    // A name is a server file (relative to its src/), or another file of
    // the workspace (relative to its root).
    let missing: Vec<_> = named
        .difference(&files)
        .filter(|name| !workspace_root().join(name).is_file())
        .collect();
    assert!(
        unnamed.is_empty(),
        "docs/architecture.md does not name {unnamed:?}"
    );
    assert!(
        missing.is_empty(),
        "docs/architecture.md names files that do not exist: {missing:?}"
    );
    println!(
        "docs/architecture.md names all {} files of the server",
        files.len()
    );
}
