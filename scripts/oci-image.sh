# Sourced by the end-to-end scripts: writes a one-layer OCI image layout.
#
# one_layer_image DIR LAYER_TAR: makes DIR an OCI image layout holding LAYER_TAR (moved into its
# blob store) as the only layer of an image tagged v1. Sets layer_hex, layer_size, config_hex
# and manifest_hex (sha256 digests in hex) for the caller to compare pulled blobs against.
one_layer_image() {
  local dir=$1 tar=$2 config_size manifest_size
  mkdir -p "$dir/blobs/sha256"
  layer_hex=$(sha256sum "$tar" | cut -d' ' -f1)
  layer_size=$(stat -c %s "$tar")
  mv "$tar" "$dir/blobs/sha256/$layer_hex"
  printf '{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$layer_hex" >"$dir/config.json"
  config_hex=$(sha256sum "$dir/config.json" | cut -d' ' -f1)
  config_size=$(stat -c %s "$dir/config.json")
  mv "$dir/config.json" "$dir/blobs/sha256/$config_hex"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%s}]}' \
    "$config_hex" "$config_size" "$layer_hex" "$layer_size" >"$dir/manifest.json"
  manifest_hex=$(sha256sum "$dir/manifest.json" | cut -d' ' -f1)
  manifest_size=$(stat -c %s "$dir/manifest.json")
  mv "$dir/manifest.json" "$dir/blobs/sha256/$manifest_hex"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' \
    "$manifest_hex" "$manifest_size" >"$dir/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$dir/oci-layout"
}
