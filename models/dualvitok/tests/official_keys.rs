//! The module tree built from the built-in release configuration has exactly the tensors of
//! the released checkpoint: the 999 names and shapes derived from the official constructors
//! (`tests/data/official_keys.txt`, copied from the architecture dossier).

use illume_backends::NdArray;
use illume_dualvitok::{names, DualViTokConfig, DualViTokModel};

#[test]
fn built_in_configuration_has_the_official_tensors() {
    let expected: Vec<(String, Vec<usize>)> = include_str!("data/official_keys.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let (name, shape) = line.split_once(' ').expect("`name [shape]`");
            let dims = shape
                .trim()
                .trim_start_matches('[')
                .trim_end_matches(']')
                .split(',')
                .map(|d| d.trim().parse::<usize>().expect("dimension"))
                .collect();
            (name.to_string(), dims)
        })
        .collect();
    assert_eq!(expected.len(), 999, "the key list has 999 tensors");

    // Parameters are created lazily: nothing of the 1.35 G values is allocated here.
    let model = DualViTokModel::<NdArray>::new(&DualViTokConfig::official(), &Default::default());
    let actual = names::official_shapes(&model);

    let missing: Vec<&String> = expected
        .iter()
        .map(|(n, _)| n)
        .filter(|n| !actual.contains_key(*n))
        .collect();
    let extra: Vec<&String> = actual
        .keys()
        .filter(|n| !expected.iter().any(|(e, _)| e == *n))
        .collect();
    assert!(
        missing.is_empty(),
        "missing from the module tree: {missing:?}"
    );
    assert!(extra.is_empty(), "not in the release: {extra:?}");
    for (name, shape) in &expected {
        assert_eq!(&actual[name], shape, "{name}");
    }
    let values: usize = actual.values().map(|s| s.iter().product::<usize>()).sum();
    println!("{} tensors, {values} values", actual.len());
    // The size check run before building must never refuse the release: a true lower
    // bound, and a tight one (within 20%) so a config inflated by an attacker is caught.
    let bound = DualViTokConfig::official().min_parameter_count();
    assert!(bound <= values as u64, "{bound} > {values}");
    assert!(
        bound * 10 >= values as u64 * 8,
        "{bound} is loose against {values}"
    );
}
