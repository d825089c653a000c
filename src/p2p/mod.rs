//! The embedded IPFS node on rust-libp2p: Bitswap, Kademlia, gossipsub, mDNS, record exchange.
