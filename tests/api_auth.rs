//! Access control over real HTTP: Basic credentials against an htpasswd file, the access rules
//! of `[auth]`, the 401 challenge clients need before they log in, filtered listings, mounts,
//! the refusal of writes by a replica or a closed write gate whoever asks, and the `oci-client`
//! crate logging in as users do.

mod api_support;

use std::time::{Duration, Instant};

use api_support::{
    assert_error, header, json, next_link, pseudo_random, TestRegistry, OCI_MANIFEST,
};
use ipns_registry::config::{AuthConfig, Config};
use ipns_registry::registry::RegistryOptions;
use reqwest::{Method, Response};

const CHALLENGE: &str = r#"Basic realm="ipns-registry""#;

/// `team/` is readable by anyone and writable by alice; `private/` is alice's alone; `ci/` is
/// written by ci-bot and read by nobody else; everything else follows the defaults (anonymous
/// pulls, every user pushes and deletes).
const RULES: &str = r#"
[[auth.access]]
prefix = "team/"
pull = ["*"]
push = ["alice"]
delete = ["alice"]

[[auth.access]]
prefix = "private"
anonymous_pull = false
pull = ["alice"]
push = ["alice"]
delete = ["alice"]

[[auth.access]]
prefix = "ci"
anonymous_pull = false
push = ["ci-bot"]
"#;

const ALICE: (&str, &str) = ("alice", "wonderland");
const BOB: (&str, &str) = ("bob", "builder");
const CI: (&str, &str) = ("ci-bot", "s3cret:with:colons");

fn auth_config(toml: &str) -> AuthConfig {
    Config::parse(toml).expect("config parses").auth
}

async fn start(toml: &str) -> TestRegistry {
    TestRegistry::with_auth(
        RegistryOptions::default(),
        auth_config(toml),
        &[ALICE, BOB, CI],
    )
    .await
}

/// Who sends a request in the matrix.
#[derive(Debug, Clone, Copy)]
enum Who {
    Nobody,
    WrongPassword,
    /// A user without the right.
    Bob,
    /// A user with it.
    Alice,
}

impl Who {
    fn credentials(self) -> Option<(&'static str, &'static str)> {
        match self {
            Who::Nobody => None,
            Who::WrongPassword => Some(("alice", "looking-glass")),
            Who::Bob => Some(BOB),
            Who::Alice => Some(ALICE),
        }
    }
}

const EVERYONE: [Who; 4] = [Who::Nobody, Who::WrongPassword, Who::Bob, Who::Alice];

/// Asserts a 401: `UNAUTHORIZED` with the Basic challenge.
async fn assert_unauthorized(resp: Response) {
    assert_eq!(
        header(&resp, "WWW-Authenticate").as_deref(),
        Some(CHALLENGE)
    );
    assert_error(resp, 401, "UNAUTHORIZED").await;
}

/// Asserts a 403: `DENIED`, no challenge (other credentials would be needed, not any).
async fn assert_denied(resp: Response) {
    assert_eq!(header(&resp, "WWW-Authenticate"), None);
    assert_error(resp, 403, "DENIED").await;
}

/// Asserts the matrix's expectation for a request that `Alice` may make and `Bob` may not.
async fn expect_matrix(who: Who, resp: Response, success: u16, what: &str) {
    match who {
        Who::Nobody | Who::WrongPassword => assert_unauthorized(resp).await,
        Who::Bob => assert_denied(resp).await,
        Who::Alice => {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            assert_eq!(status, success, "{what} as alice: {body}");
        }
    }
}

async fn catalog(reg: &TestRegistry) -> Response {
    reg.get("/v2/_catalog").await
}

async fn repositories(resp: Response) -> Vec<String> {
    assert_eq!(resp.status(), 200);
    serde_json::from_value(json(resp).await["repositories"].clone()).expect("repositories")
}

#[tokio::test]
async fn auth_matrix_for_pull_push_delete_catalog_and_tags() {
    let mut reg = start(RULES).await;
    reg.login(Some(ALICE));
    let (team_manifest, team_digest) = reg.push_image("team/app", "v1", 1).await;
    reg.push_image("private/app", "v1", 2).await;
    // The same image with an annotation more: only the manifest is new to push.
    let manifest = format!(
        "{},\"annotations\":{{\"by\":\"matrix\"}}}}",
        team_manifest.strip_suffix('}').expect("a JSON object")
    );
    reg.login(Some(BOB));
    // Outside every rule, any user pushes.
    reg.push_image("open/app", "v1", 3).await;

    for who in EVERYONE {
        reg.login(who.credentials());

        // Pull from a repository only alice may read.
        let resp = reg.get_manifest("private/app", "v1").await;
        expect_matrix(who, resp, 200, "pull").await;

        // Tags of that repository.
        let resp = reg.get("/v2/private/app/tags/list").await;
        if let Who::Alice = who {
            assert_eq!(json(resp).await["tags"], serde_json::json!(["v1"]));
        } else {
            expect_matrix(who, resp, 200, "tags").await;
        }

        // Push into team/ (alice's to write): a session, and a manifest.
        let resp = reg.send(Method::POST, "/v2/team/app/blobs/uploads/").await;
        expect_matrix(who, resp, 202, "upload").await;
        let resp = reg
            .put_manifest("team/app", "v2", OCI_MANIFEST, &manifest)
            .await;
        expect_matrix(who, resp, 201, "push").await;

        // Catalog: only what the caller may pull; wrong credentials are refused outright.
        let resp = catalog(&reg).await;
        match who {
            Who::WrongPassword => assert_unauthorized(resp).await,
            Who::Nobody | Who::Bob => {
                assert_eq!(
                    repositories(resp).await,
                    ["open/app", "team/app"],
                    "{who:?}"
                )
            }
            Who::Alice => assert_eq!(
                repositories(resp).await,
                ["open/app", "private/app", "team/app"]
            ),
        }
    }

    // Delete, last: alice's success removes what the others failed to delete.
    for who in EVERYONE {
        reg.login(who.credentials());
        let resp = reg
            .delete(&format!("/v2/team/app/manifests/{team_digest}"))
            .await;
        expect_matrix(who, resp, 202, "delete").await;
    }
    reg.login(None);
    let resp = reg.get_manifest("team/app", "v1").await;
    assert_error(resp, 404, "MANIFEST_UNKNOWN").await;
    // Anonymous tags of a public repository.
    assert_eq!(reg.tags("team/app").await, ["v2"]);
}

#[tokio::test]
async fn the_version_check_challenges_and_empty_credentials_are_anonymous() {
    let mut reg = start(RULES).await;
    reg.login(Some(ALICE));
    reg.push_image("team/app", "v1", 1).await;
    reg.push_image("private/app", "v1", 2).await;
    reg.login(None);

    // docker login and podman login send credentials only after this 401.
    assert_unauthorized(reg.get("/v2/").await).await;
    let anonymous = [("Authorization", "Basic Og==")];
    let bearer = [("Authorization", "Bearer abc")];
    let garbage = [("Authorization", "Basic !!")];
    for headers in [&anonymous[..], &bearer, &garbage] {
        let mut request = reg.request(Method::GET, "/v2/");
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        assert_unauthorized(request.send().await.expect("GET /v2/")).await;
    }
    reg.login(Some(BOB));
    let resp = reg.get("/v2/").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        header(&resp, "Docker-Distribution-API-Version").as_deref(),
        Some("registry/2.0")
    );

    // skopeo and podman without credentials send `Basic Og==` after the challenge: a pull
    // where anonymous pulls are allowed works with it, a push does not.
    reg.login(None);
    let resp = reg
        .request(Method::GET, "/v2/team/app/manifests/v1")
        .header("Accept", OCI_MANIFEST)
        .header("Authorization", "Basic Og==")
        .send()
        .await
        .expect("GET");
    assert_eq!(resp.status(), 200);
    let resp = reg
        .request(Method::POST, "/v2/team/app/blobs/uploads/")
        .header("Authorization", "Basic Og==")
        .send()
        .await
        .expect("POST");
    assert_unauthorized(resp).await;

    // A wrong password is never served as anonymous, even where anonymous callers may read;
    // nor is an unknown user.
    for wrong in [("alice", "nope"), ("mallory", "wonderland"), ("alice", "")] {
        reg.login(Some(wrong));
        assert_unauthorized(reg.get_manifest("team/app", "v1").await).await;
    }

    // HEAD: the challenge, no body.
    reg.login(None);
    let resp = reg.head("/v2/private/app/manifests/v1").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(
        header(&resp, "WWW-Authenticate").as_deref(),
        Some(CHALLENGE)
    );
    assert!(resp.bytes().await.expect("body").is_empty());

    // A private repository is a 401 whether it exists or not: nothing leaks.
    let resp = reg.get_manifest("private/nothing-here", "v1").await;
    assert_unauthorized(resp).await;
    reg.login(Some(BOB));
    assert_denied(reg.get_manifest("private/nothing-here", "v1").await).await;
    reg.login(Some(ALICE));
    assert_error(
        reg.get_manifest("private/nothing-here", "v1").await,
        404,
        "NAME_UNKNOWN",
    )
    .await;
}

#[tokio::test]
async fn pushing_includes_pulling_and_anonymous_rights_are_every_users() {
    let mut reg = start(RULES).await;
    reg.login(Some(CI));
    let (_, digest) = reg.push_image("ci/build", "v1", 5).await;
    let resp = reg.get_manifest("ci/build", &digest).await;
    assert_eq!(resp.status(), 200, "ci-bot reads what it pushed");
    reg.login(Some(BOB));
    assert_denied(reg.get_manifest("ci/build", &digest).await).await;
    reg.login(None);
    assert_unauthorized(reg.get_manifest("ci/build", &digest).await).await;
    // team/ names no pullers beyond "*"; open/ has no rule: bob reads both, as anonymous does.
    reg.login(Some(BOB));
    reg.push_image("open/app", "v1", 6).await;
    reg.login(Some(CI));
    assert_eq!(reg.get_manifest("open/app", "v1").await.status(), 200);
}

#[tokio::test]
async fn catalog_pages_hold_only_what_the_caller_may_pull() {
    let mut reg = start(RULES).await;
    reg.login(Some(ALICE));
    for (i, repo) in [
        "a/app",
        "private/x",
        "b/app",
        "private/y",
        "c/app",
        "team/z",
    ]
    .iter()
    .enumerate()
    {
        reg.push_image(repo, "v1", 10 + i as u64).await;
    }
    reg.login(None);
    let mut seen = Vec::new();
    let mut next = Some("/v2/_catalog?n=2".to_owned());
    while let Some(path) = next {
        let resp = reg.get(&path).await;
        assert_eq!(resp.status(), 200);
        next = next_link(&resp);
        let page: Vec<String> =
            serde_json::from_value(json(resp).await["repositories"].clone()).expect("page");
        assert!(
            page.len() == 2 || next.is_none(),
            "short page {page:?} before the end"
        );
        seen.extend(page);
    }
    assert_eq!(seen, ["a/app", "b/app", "c/app", "team/z"]);
    reg.login(Some(ALICE));
    assert_eq!(repositories(catalog(&reg).await).await.len(), 6);
}

#[tokio::test]
async fn mounts_take_blobs_only_from_where_the_caller_may_pull() {
    let mut reg = start(RULES).await;
    reg.login(Some(ALICE));
    let secret = pseudo_random(3000, 77);
    let digest = reg.upload("private/app", &secret).await;
    let mount = |from: Option<&str>| match from {
        Some(from) => format!("/v2/open/app/blobs/uploads/?mount={digest}&from={from}"),
        None => format!("/v2/open/app/blobs/uploads/?mount={digest}"),
    };

    // Bob may push to open/app but not read private/app: no mount, an upload session instead.
    reg.login(Some(BOB));
    for from in [Some("private/app"), None] {
        let resp = reg.send(Method::POST, &mount(from)).await;
        assert_eq!(resp.status(), 202, "bob's mount from {from:?}");
        assert!(header(&resp, "Location").is_some());
        let resp = reg.head(&format!("/v2/open/app/blobs/{digest}")).await;
        assert_eq!(resp.status(), 404, "the secret blob stays out of open/app");
    }
    // Alice may read it: the mount happens.
    reg.login(Some(ALICE));
    let resp = reg.send(Method::POST, &mount(Some("private/app"))).await;
    assert_eq!(resp.status(), 201);
    reg.login(Some(BOB));
    let resp = reg.get(&format!("/v2/open/app/blobs/{digest}")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.expect("blob"), secret);
}

#[tokio::test]
async fn writes_are_refused_whoever_asks_when_the_node_takes_none() {
    let mut reg = start(RULES).await;
    reg.login(Some(ALICE));
    let (manifest, _) = reg.push_image("team/app", "v1", 1).await;

    // A writer whose gate is closed (a second writer of its name): 503 for everyone, since
    // neither credentials nor rights change it; reads go on.
    reg.registry()
        .refuse_writes("writes refused: another node publishes under this writer's IPNS name");
    for who in EVERYONE {
        reg.login(who.credentials());
        let resp = reg
            .put_manifest("team/app", "v2", OCI_MANIFEST, &manifest)
            .await;
        let error = assert_error(resp, 503, "UNAVAILABLE").await;
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("another node publishes")),
            "{error}"
        );
        let resp = reg.send(Method::POST, "/v2/open/x/blobs/uploads/").await;
        assert_error(resp, 503, "UNAVAILABLE").await;
        let resp = reg.delete("/v2/team/app/manifests/v1").await;
        assert_error(resp, 503, "UNAVAILABLE").await;
    }
    reg.login(Some(ALICE));
    assert_eq!(reg.get_manifest("team/app", "v1").await.status(), 200);
    reg.login(None);
    assert_unauthorized(reg.get("/v2/").await).await;

    // A replica: 405 UNSUPPORTED whoever asks, authorised or not; private reads still need
    // alice.
    reg.reopen_read_only().await;
    for who in EVERYONE {
        reg.login(who.credentials());
        let resp = reg
            .put_manifest("team/app", "v2", OCI_MANIFEST, &manifest)
            .await;
        assert_eq!(header(&resp, "Allow").as_deref(), Some("GET, HEAD"));
        assert_error(resp, 405, "UNSUPPORTED").await;
        let resp = reg.send(Method::POST, "/v2/team/app/blobs/uploads/").await;
        assert_error(resp, 405, "UNSUPPORTED").await;
    }
    reg.login(None);
    assert_unauthorized(reg.get("/v2/private/app/tags/list").await).await;
}

/// Polls `probe` until it holds, for at most 10 s (the file is looked at once a second).
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !probe().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn authentication_starts_with_the_first_user_and_follows_the_file() {
    let mut reg =
        TestRegistry::with_auth(RegistryOptions::default(), auth_config(RULES), &[]).await;
    // No user yet: the node behaves as without access control, rules or not.
    assert_eq!(reg.get("/v2/").await.status(), 200);
    reg.push_image("private/app", "v1", 1).await;
    assert_eq!(reg.get_manifest("private/app", "v1").await.status(), 200);

    // A user added while the node runs turns authentication on.
    reg.set_password(ALICE.0, ALICE.1);
    eventually("authentication to start", || async {
        reg.get("/v2/").await.status() == 401
    })
    .await;
    assert_unauthorized(reg.get_manifest("private/app", "v1").await).await;
    reg.login(Some(ALICE));
    assert_eq!(reg.get_manifest("private/app", "v1").await.status(), 200);

    // A new password applies; the old one (even remembered as verified) no longer does.
    reg.set_password(ALICE.0, "new password");
    eventually("the new password", || async {
        reg.get("/v2/").await.status() == 401
    })
    .await;
    reg.login(Some((ALICE.0, "new password")));
    assert_eq!(reg.get("/v2/").await.status(), 200);

    // The last user removed: open again.
    reg.remove_user(ALICE.0);
    reg.login(None);
    eventually("authentication to stop", || async {
        reg.get("/v2/").await.status() == 200
    })
    .await;
}

mod with_oci_client {
    use super::*;
    use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
    use oci_client::manifest::{OciImageManifest, IMAGE_LAYER_MEDIA_TYPE};
    use oci_client::secrets::RegistryAuth;
    use oci_client::{Client, Reference};

    fn client() -> Client {
        Client::new(ClientConfig {
            protocol: ClientProtocol::Http,
            ..Default::default()
        })
    }

    async fn push(reg: &TestRegistry, name: &str, auth: &RegistryAuth) -> Result<(), String> {
        let image: Reference = format!("{}/{name}", reg.addr()).parse().expect("reference");
        let layers = vec![ImageLayer::oci_v1(pseudo_random(4096, 9), None)];
        let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
        let manifest = OciImageManifest::build(&layers, &config, None);
        client()
            .push(&image, &layers, config, auth, Some(manifest))
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    async fn pull(reg: &TestRegistry, name: &str, auth: &RegistryAuth) -> Result<usize, String> {
        let image: Reference = format!("{}/{name}", reg.addr()).parse().expect("reference");
        client()
            .pull(&image, auth, vec![IMAGE_LAYER_MEDIA_TYPE])
            .await
            .map(|image| image.layers.len())
            .map_err(|e| e.to_string())
    }

    fn basic((user, password): (&str, &str)) -> RegistryAuth {
        RegistryAuth::Basic(user.into(), password.into())
    }

    #[tokio::test]
    async fn a_real_client_logs_in_with_basic_credentials() {
        let reg = start(RULES).await;
        let anonymous = RegistryAuth::Anonymous;
        push(&reg, "team/app:v1", &basic(ALICE))
            .await
            .expect("alice pushes to team/");
        assert_eq!(pull(&reg, "team/app:v1", &anonymous).await, Ok(1));
        assert!(push(&reg, "team/app:v2", &anonymous).await.is_err());
        assert!(push(&reg, "team/app:v2", &basic(BOB)).await.is_err());
        assert!(push(&reg, "team/app:v2", &basic(("alice", "wrong")))
            .await
            .is_err());
        push(&reg, "private/app:v1", &basic(ALICE))
            .await
            .expect("alice pushes to private/");
        assert!(pull(&reg, "private/app:v1", &anonymous).await.is_err());
        assert!(pull(&reg, "private/app:v1", &basic(BOB)).await.is_err());
        assert_eq!(pull(&reg, "private/app:v1", &basic(ALICE)).await, Ok(1));
    }
}
