//! `getaddrinfo` and `getnameinfo` on the loop's executor: localhost and literals only.

mod net_support;

use std::net::SocketAddr;

use loopd::{AddrInfoHints, Error, EventLoop, Family, SockType};
use net_support::run;

fn stream(family: Family) -> AddrInfoHints {
    AddrInfoHints {
        family,
        socktype: SockType::Stream,
        ..Default::default()
    }
}

#[test]
fn localhost_resolves_to_loopback_addresses_of_the_asked_family() {
    let lp = EventLoop::new().unwrap();
    let infos = run(
        &lp,
        lp.getaddrinfo(Some("localhost"), Some(8080), stream(Family::Inet)),
    )
    .unwrap();
    assert!(!infos.is_empty());
    for info in &infos {
        assert_eq!(info.family, Family::Inet);
        assert_eq!(info.socktype, SockType::Stream);
        assert_eq!(info.proto, libc::IPPROTO_TCP);
        assert_eq!(info.addr, "127.0.0.1:8080".parse::<SocketAddr>().unwrap());
    }
    let all = run(
        &lp,
        lp.getaddrinfo(Some("localhost"), None, AddrInfoHints::default()),
    )
    .unwrap();
    assert!(
        all.iter()
            .all(|i| i.addr.ip().is_loopback() && i.addr.port() == 0)
    );
    assert!(
        all.iter().any(|i| i.socktype == SockType::Datagram),
        "type 0 lists every socket type: {all:?}"
    );
    lp.close().unwrap();
}

#[test]
fn passive_lookups_without_a_host_give_the_wildcard() {
    let lp = EventLoop::new().unwrap();
    let hints = AddrInfoHints {
        flags: libc::AI_PASSIVE,
        ..stream(Family::Inet)
    };
    let infos = run(&lp, lp.getaddrinfo(None, Some(80), hints)).unwrap();
    assert_eq!(infos[0].addr, "0.0.0.0:80".parse::<SocketAddr>().unwrap());
    let canon = AddrInfoHints {
        flags: libc::AI_CANONNAME,
        ..stream(Family::Inet)
    };
    let infos = run(&lp, lp.getaddrinfo(Some("localhost"), None, canon)).unwrap();
    assert!(
        !infos[0].canonname.is_empty(),
        "AI_CANONNAME fills the first entry"
    );
    lp.close().unwrap();
}

#[test]
fn failed_lookups_name_the_host_or_address() {
    let lp = EventLoop::new().unwrap();
    let numeric = AddrInfoHints {
        flags: libc::AI_NUMERICHOST,
        ..Default::default()
    };
    let err = run(&lp, lp.getaddrinfo(Some("not-an-ip"), Some(1), numeric)).unwrap_err();
    assert!(matches!(&err, Error::Resolve { host, .. } if host == "not-an-ip"));
    assert_eq!(err.to_string(), "cannot resolve host \"not-an-ip\"");
    let cause = std::error::Error::source(&err).unwrap().to_string();
    assert!(!cause.is_empty(), "gai_strerror's message is the source");

    let addr: SocketAddr = "127.0.0.1:1".parse().unwrap();
    let name = run(
        &lp,
        lp.getnameinfo(addr, libc::NI_NUMERICHOST | libc::NI_NUMERICSERV),
    );
    assert_eq!(name.unwrap(), ("127.0.0.1".to_string(), "1".to_string()));
    let err = run(&lp, lp.getnameinfo(addr, 0x4000_0000)).unwrap_err(); // EAI_BADFLAGS
    assert!(matches!(err, Error::NameInfo { .. }));
    assert_eq!(
        err.to_string(),
        "cannot get the name of address 127.0.0.1:1"
    );
    lp.close().unwrap();
}

#[test]
fn lookups_on_a_closed_loop_fail() {
    let lp = EventLoop::new().unwrap();
    let lookup = lp.getaddrinfo(Some("localhost"), None, AddrInfoHints::default());
    let other = EventLoop::new().unwrap();
    lp.close().unwrap();
    let err = other.run_until_complete(lookup).unwrap().unwrap_err();
    assert!(matches!(err, Error::Closed), "{err}");
}
