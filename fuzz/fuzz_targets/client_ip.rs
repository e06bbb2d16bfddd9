//! `X-Forwarded-For` behind trusted proxies: the client address is the peer or one of the
//! hops sent, never a panic.
#![no_main]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use latchkey::http::fuzzing::{client_ip, config};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let peer = match first % 3 {
        0 => IpAddr::V4(Ipv4Addr::new(10, 0, 0, first)),
        1 => IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, u16::from(first))),
        _ => IpAddr::V4(Ipv4Addr::new(203, 0, 113, first)),
    };
    let config = config(false, &[], &["10.0.0.0/8", "fd00::/8", "127.0.0.1/32"]);
    let headers = latchkey_fuzz::repeated("x-forwarded-for", b"", rest);
    let client = client_ip(peer, &headers, &config);
    let trusted = config.trusted_proxies.iter().any(|n| n.contains(&peer));
    if !trusted {
        assert_eq!(client, peer, "an untrusted peer is the client");
    } else if client != peer.to_canonical() {
        let sent = rest
            .split(|b| *b == b'\n' || *b == b',')
            .filter_map(|hop| std::str::from_utf8(hop).ok()?.trim().parse::<IpAddr>().ok())
            .any(|hop| hop.to_canonical() == client);
        assert!(sent, "{client} is neither the peer nor a hop sent");
    }
});
