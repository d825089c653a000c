//! Reading HTTP Basic credentials from an `Authorization` header.

use base64::Engine;
use http::HeaderValue;

/// What a request's `Authorization` header presents.
#[derive(Debug, PartialEq, Eq)]
pub enum Presented {
    /// No header, or Basic credentials with an empty user and password: `containers/image`
    /// (skopeo, podman) sends `Basic Og==` after a Basic challenge when it has no credentials.
    Nothing,
    /// A user name and password.
    Basic {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// Some other scheme, or Basic credentials that do not decode.
    Unusable,
}

/// Reads `value`, the `Authorization` header of a request, if it has one.
pub fn presented(value: Option<&HeaderValue>) -> Presented {
    let Some(value) = value else {
        return Presented::Nothing;
    };
    let Ok(text) = value.to_str() else {
        return Presented::Unusable;
    };
    let text = text.trim();
    let Some((scheme, encoded)) = text.split_once(' ') else {
        return Presented::Unusable;
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Presented::Unusable;
    }
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return Presented::Unusable;
    };
    let Ok(decoded) = String::from_utf8(decoded) else {
        return Presented::Unusable;
    };
    // User names cannot hold ':', passwords can: the first one separates them.
    let Some((user, password)) = decoded.split_once(':') else {
        return Presented::Unusable;
    };
    if user.is_empty() && password.is_empty() {
        return Presented::Nothing;
    }
    Presented::Basic {
        user: user.to_owned(),
        password: password.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Presented {
        presented(Some(&HeaderValue::from_str(value).expect("header value")))
    }

    #[test]
    fn basic_credentials() {
        assert_eq!(presented(None), Presented::Nothing);
        assert_eq!(parse("Basic Og=="), Presented::Nothing);
        // "alice:pa:ss"
        assert_eq!(
            parse("basic  YWxpY2U6cGE6c3M= "),
            Presented::Basic {
                user: "alice".into(),
                password: "pa:ss".into()
            }
        );
        // ":x" (no user) and "alice:" (no password) are credentials, wrong ones.
        assert!(matches!(parse("Basic Ong="), Presented::Basic { .. }));
        assert!(matches!(parse("Basic YWxpY2U6"), Presented::Basic { .. }));
        for bad in [
            "Bearer abc",
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U=",
            "Basic /w==",
        ] {
            assert_eq!(parse(bad), Presented::Unusable, "{bad}");
        }
    }
}
