//! `server:`: the listeners.

use super::bounds::set;
use super::*;

#[test]
fn listening_on_port_0_is_refused() {
    assert_error(
        &set("server.listen", "[\"127.0.0.1:8080\", \"0.0.0.0:0\"]"),
        r#"server.listen[1]: "0.0.0.0:0" has port 0, which would listen on a random port"#,
    );
}
