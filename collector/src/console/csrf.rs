//! CSRF protection: every POST form carries the session's token in a hidden `csrf` field,
//! compared in constant time. The login form, which has no session yet, carries a token that
//! must equal the `pantau_login` cookie set with the form (double submit).

use subtle::ConstantTimeEq;

/// Whether `presented` is `expected`, in time that does not depend on where they differ.
pub fn matches(expected: &str, presented: Option<&str>) -> bool {
    let Some(presented) = presented else {
        return false;
    };
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(presented.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_token_passes() {
        let token = "a".repeat(64);
        assert!(matches(&token, Some(&token)));
        assert!(!matches(&token, None));
        assert!(!matches(&token, Some("")));
        assert!(!matches(&token, Some(&"a".repeat(63))));
        assert!(!matches(&token, Some(&format!("{}b", "a".repeat(63)))));
        assert!(
            !matches("", Some("")),
            "an empty expected token never matches"
        );
    }
}
