//! A key given twice is an error, wherever it is.

use super::*;

#[test]
fn a_pool_given_twice_is_reported_with_both_lines() {
    let yaml = "\
pools:
  chat:
    backends: [{ url: \"http://127.0.0.1:9001\" }]
  code:
    backends: [{ url: \"http://127.0.0.1:9002\" }]
  chat:
    backends: [{ url: \"http://127.0.0.1:9003\" }]
routes:
  - { pool: chat }
";
    assert_eq!(
        errors(yaml),
        vec!["pools.chat: is given twice, on lines 2 and 6".to_string()]
    );
}

#[test]
fn every_duplicate_is_reported_with_its_path() {
    let yaml = "\
server:
  threads: 2
  threads: 3
pools:
  chat:
    backends:
      - { url: \"http://127.0.0.1:9001\", weight: 1, weight: 2 }
models:
  aliases: { a: b, a: c }
";
    assert_eq!(
        errors(yaml),
        vec![
            "server.threads: is given twice, on lines 2 and 3".to_string(),
            "pools.chat.backends[0].weight: is given twice on line 7".to_string(),
            "models.aliases.a: is given twice on line 9".to_string(),
        ]
    );
}

#[test]
fn keys_with_the_same_text_are_the_same_key() {
    // `1` and `"1"` are different YAML keys but the same pool name.
    let yaml = "pools:\n  1: { backends: [{ url: \"http://127.0.0.1:9001\" }] }\n  \
                \"1\": { backends: [{ url: \"http://127.0.0.1:9002\" }] }\n";
    assert_eq!(
        errors(yaml),
        vec!["pools.1: is given twice, on lines 2 and 3".to_string()]
    );
}

#[test]
fn the_same_key_in_different_mappings_is_fine() {
    let yaml = "pools:\n  a: { backends: [{ url: \"http://127.0.0.1:9001\" }, { url: \"http://127.0.0.1:9002\" }] }\n  \
                b: { backends: [{ url: \"http://127.0.0.1:9001\" }] }\nroutes:\n  - { pool: a }\n";
    assert!(Config::from_yaml(yaml).is_ok());
}

#[test]
fn many_duplicates_are_counted_past_the_first_ten() {
    let aliases: String = (0..15)
        .map(|i| format!("    m{i}: x\n    m{i}: y\n"))
        .collect();
    let yaml = format!(
        "pools:\n  a: {{ backends: [{{ url: \"http://127.0.0.1:9001\" }}] }}\nmodels:\n  aliases:\n{aliases}"
    );
    let all = errors(&yaml);
    assert_eq!(all.len(), 11, "{all:#?}");
    assert_eq!(
        all[0],
        "models.aliases.m0: is given twice, on lines 5 and 6"
    );
    assert_eq!(all[10], "and 5 more keys given twice");
}

#[test]
fn other_errors_are_unchanged_by_the_walk() {
    // Broken YAML is still reported by the parser, and unknown keys by name.
    assert_eq!(
        errors("pools:\n  a: b: c\n"),
        vec!["YAML: mapping values are not allowed in this context at line 2 column 7"]
    );
    assert_error(
        "pools:\n  a:\n    backends: [{ url: \"http://127.0.0.1:9001\", wieght: 2 }]\n",
        "pools.a.backends[0].wieght: unknown key",
    );
}
