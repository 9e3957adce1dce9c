//! A route condition that is written must say something.

use super::*;

/// One pool, and `route` as the first of two routes.
fn with_route(route: &str) -> String {
    format!(
        "pools:\n  a:\n    backends: [{{ url: \"http://127.0.0.1:9001\" }}]\n\
         routes:\n  - {route}\n  - {{ path_prefix: /v1, pool: a }}\n"
    )
}

const EMPTY: &str = "is empty; leave the key out for a route without this condition";

#[test]
fn an_empty_condition_is_an_error_not_a_catch_all() {
    for (route, path) in [
        (
            r#"{ header: { name: "", regex: "^x" }, pool: a }"#,
            "header.name",
        ),
        (r#"{ path_prefix: "", pool: a }"#, "path_prefix"),
        ("{ path_prefix: ~, pool: a }", "path_prefix"),
        (r#"{ model: "", pool: a }"#, "model"),
        ("{ model: ~, pool: a }", "model"),
        ("{ header: ~, pool: a }", "header"),
    ] {
        assert_error(&with_route(route), &format!("routes[0].{path}: {EMPTY}"));
    }
    // The block form, where a forgotten value is easy to miss.
    assert_error(
        &with_route("pool: a\n    header:"),
        &format!("routes[0].header: {EMPTY}"),
    );
}

#[test]
fn a_header_condition_needs_a_regex() {
    assert_error(
        &with_route(r#"{ header: { name: x-model, regex: "" }, pool: a }"#),
        r#"routes[0].header.regex: is empty; write "^" to match any value of the header"#,
    );
    assert_error(
        &with_route("{ header: { name: x-model }, pool: a }"),
        r#"routes[0].header.regex: is required ("^" matches any value)"#,
    );
    assert_error(
        &with_route(r#"{ header: { regex: "^x" }, pool: a }"#),
        "routes[0].header.name: is required",
    );
    let ok = with_route(r#"{ header: { name: X-Model, regex: "^" }, pool: a }"#);
    let c = Config::from_yaml(&ok).unwrap();
    assert_eq!(c.routes[0].header.as_ref().unwrap().name, "x-model");
}

#[test]
fn every_problem_of_a_route_is_reported() {
    let all = errors(&with_route(
        r#"{ path_prefix: "", model: "", header: { name: "", regex: "" }, pool: b }"#,
    ));
    assert_eq!(all.len(), 5, "{all:#?}");
}
