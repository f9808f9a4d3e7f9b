//! Transport checks (Streamable HTTP, SSE, sessions, edges).

use super::Check;

pub fn checks() -> Vec<Check> {
    Vec::new()
}
