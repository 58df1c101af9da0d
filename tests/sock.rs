//! `sock_*` operations on non-blocking sockets the test owns, over 127.0.0.1.

mod net_support;

use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use loopd::{Address, Error, EventLoop};
use net_support::{run, sleep};
use socket2::{Domain, SockAddr, Socket, Type};

fn nonblocking(kind: Type) -> Socket {
    let sock = Socket::new(Domain::IPV4, kind, None).unwrap();
    sock.set_nonblocking(true).unwrap();
    sock
}

fn listening() -> (Socket, SocketAddr) {
    let sock = nonblocking(Type::STREAM);
    sock.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    sock.listen(8).unwrap();
    let addr = sock.local_addr().unwrap().as_socket().unwrap();
    (sock, addr)
}

#[test]
fn accept_connect_sendall_and_recv_move_four_mebibytes() {
    const LEN: usize = 4 * 1024 * 1024;
    let lp = EventLoop::new().unwrap();
    let (listener, addr) = listening();
    let inner = lp.clone();
    let (received, peer, client_addr) = run(&lp, async move {
        let server_lp = inner.clone();
        let server = inner
            .create_task(
                async move {
                    let (conn, peer) = server_lp.sock_accept(&listener).await.unwrap();
                    let mut got = Vec::new();
                    let mut buf = vec![0; 64 * 1024];
                    loop {
                        let n = server_lp.sock_recv_into(&conn, &mut buf).await.unwrap();
                        if n == 0 {
                            break;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    (got, peer)
                },
                None,
            )
            .unwrap();
        let client = nonblocking(Type::STREAM);
        inner.sock_connect(&client, &addr.into()).await.unwrap();
        let client_addr = client.local_addr().unwrap().as_socket().unwrap();
        let data: Vec<u8> = (0..LEN).map(|i| (i % 251) as u8).collect();
        inner.sock_sendall(&client, &data).await.unwrap();
        client.shutdown(std::net::Shutdown::Write).unwrap();
        let (got, peer) = server.take().await.unwrap();
        (got, peer, client_addr)
    });
    assert_eq!(received.len(), LEN);
    assert!(
        received
            .iter()
            .enumerate()
            .all(|(i, b)| *b == (i % 251) as u8)
    );
    assert_eq!(peer, Address::Inet(client_addr));
    lp.close().unwrap();
}

#[test]
fn sock_recv_returns_what_came_and_empty_at_the_end() {
    let lp = EventLoop::new().unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let inner = lp.clone();
    run(&lp, async move {
        inner.sock_sendall(&b, b"hello").await.unwrap();
        assert_eq!(inner.sock_recv(&a, 3).await.unwrap(), b"hel");
        assert_eq!(inner.sock_recv(&a, 100).await.unwrap(), b"lo");
        drop(b);
        assert!(inner.sock_recv(&a, 100).await.unwrap().is_empty());
    });
    lp.close().unwrap();
}

#[test]
fn datagrams_go_with_sendto_and_recvfrom() {
    let lp = EventLoop::new().unwrap();
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    a.set_nonblocking(true).unwrap();
    b.set_nonblocking(true).unwrap();
    let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
    let inner = lp.clone();
    let (n, from, data) = run(&lp, async move {
        let waiting = inner.clone();
        let receive = inner
            .create_task(
                async move {
                    let mut buf = [0; 64];
                    let (n, from) = waiting.sock_recvfrom_into(&b, &mut buf).await.unwrap();
                    (n, from, buf[..n].to_vec())
                },
                None,
            )
            .unwrap();
        sleep(&inner, Duration::from_millis(5)).await; // the receiver waits first
        let sent = inner
            .sock_sendto(&a, b"datagram", &SockAddr::from(b_addr))
            .await
            .unwrap();
        assert_eq!(sent, 8);
        receive.take().await.unwrap()
    });
    assert_eq!(
        (n, from, data),
        (8, Address::Inet(a_addr), b"datagram".to_vec())
    );
    lp.close().unwrap();
}

#[test]
fn blocking_sockets_and_refused_connects_are_errors() {
    let lp = EventLoop::new().unwrap();
    let blocking = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let fd = blocking.as_raw_fd();
    let refused_addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let inner = lp.clone();
    run(&lp, async move {
        let err = inner.sock_recv(&blocking, 1).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid sock: fd {fd}: the socket must be non-blocking")
        );
        let sock = nonblocking(Type::STREAM);
        let err = inner
            .sock_connect(&sock, &refused_addr.into())
            .await
            .unwrap_err();
        assert!(matches!(err, Error::ConnectionRefused { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!("connection to {refused_addr} refused")
        );
        let unconnected = nonblocking(Type::STREAM);
        let err = inner.sock_sendall(&unconnected, b"x").await.unwrap_err();
        assert!(matches!(err, Error::Sock { op: "send", .. }), "{err}");
    });
    lp.close().unwrap();
}

#[test]
fn a_cancelled_wait_frees_the_fd_for_add_reader() {
    let lp = EventLoop::new().unwrap();
    let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    let a = std::rc::Rc::new(a);
    let fd = a.as_raw_fd();
    let (inner, shared) = (lp.clone(), a.clone());
    run(&lp, async move {
        let waiting = inner.clone();
        let recv = inner
            .create_task(
                async move { waiting.sock_recv(&*shared, 10).await.map(|_| ()) },
                None,
            )
            .unwrap();
        sleep(&inner, Duration::from_millis(5)).await;
        assert!(!recv.done(), "nothing to read: it waits");
        assert!(recv.cancel());
        sleep(&inner, Duration::from_millis(5)).await;
        assert!(recv.cancelled());
    });
    // The same fd, still open: a leaked registration would make this fail (EEXIST).
    lp.add_reader(fd, || {}).unwrap();
    assert!(lp.remove_reader(fd).unwrap());
    drop((a, b));
    lp.close().unwrap();
}
