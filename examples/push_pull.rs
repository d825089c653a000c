//! Pushes a small two-layer image to a running node with the `oci-client` crate and pulls it back.
//!
//! ```text
//! cargo run --release -- serve &                       # a node on 127.0.0.1:5000
//! cargo run --example push_pull -- 127.0.0.1:5000/demo/hello:v1
//! ```

use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:5000/demo/hello:v1".to_owned());
    let reference: Reference = target.parse()?;
    let client = Client::new(ClientConfig {
        protocol: ClientProtocol::Http,
        ..Default::default()
    });
    let auth = RegistryAuth::Anonymous;

    let layers = vec![
        ImageLayer::oci_v1(b"first layer".to_vec(), None),
        ImageLayer::oci_v1(vec![42u8; 2 * 1024 * 1024], None),
    ];
    let config = Config::oci_v1(br#"{"architecture":"amd64","os":"linux"}"#.to_vec(), None);
    let manifest = OciImageManifest::build(&layers, &config, None);
    let pushed = client
        .push(&reference, &layers, config, &auth, Some(manifest))
        .await?;
    println!("pushed {target}: {}", pushed.manifest_url);

    let image = client
        .pull(
            &reference,
            &auth,
            vec![oci_client::manifest::IMAGE_LAYER_MEDIA_TYPE],
        )
        .await?;
    println!(
        "pulled {target}: {} layers, digest {}",
        image.layers.len(),
        image.digest.unwrap_or_default()
    );
    Ok(())
}
