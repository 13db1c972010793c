use super::*;

#[test]
fn filters_that_match_nothing_are_said() {
    let dir = crate::scratch::ScratchDir::new("filters");
    std::fs::create_dir_all(dir.path().join("memcg/system.slice")).unwrap();
    std::fs::create_dir_all(dir.path().join("proc/42")).unwrap();
    let (memcg, proc_root) = (dir.path().join("memcg"), dir.path().join("proc"));
    let f = |memcg: Option<&str>, pid| Filter {
        memcg: memcg.map(str::to_string),
        pid,
    };
    let ok = f(Some("/system.slice"), Some(42));
    assert!(filter_warnings(&ok, Some(&memcg), &proc_root).is_empty());
    let bad = f(Some("/sytem.slice"), Some(43));
    let w = filter_warnings(&bad, Some(&memcg), &proc_root);
    assert_eq!(w.len(), 2, "{w:?}");
    assert!(
        w[0].contains("no such memcg") && w[1].contains("no such process"),
        "{w:?}"
    );
    let w = filter_warnings(&ok, None, &proc_root);
    assert!(w[0].contains("no memory controller"), "{w:?}");
}
