//! The paginated list RPCs (ListServers, ListTransports, ListProcesses, ListHandles) on a
//! real daemon: pages of 3 over 7 items give every id once, ascending, and end with an
//! empty token; a token from another query or a garbage token is INVALID_ARGUMENT naming
//! `page_token`; page_size 0 is the daemon's default page.

mod support;

use std::future::Future;
use std::net::TcpStream;
use std::time::Duration;

use loopd_client::{Client, Command};
use loopd_proto::pb;
use loopd_proto::{LoopServiceClient, NetServiceClient, ProcessServiceClient};
use support::{Daemon, WAIT, tcp_server};
use tonic::transport::Channel;
use tonic::{Code, Status};

/// Items each query lists; more than two pages of [`PAGE`].
const ITEMS: usize = 7;
const PAGE: u32 = 3;

/// One page from a list RPC: the ids and the next token.
type Listed = Result<(Vec<u64>, String), Status>;

/// Walks every page of `PAGE` items from `list(page_size, token)`; asserts each page is
/// full but the last, which alone has an empty token. Returns the ids in order.
async fn walk<F, Fut>(mut list: F) -> Vec<u64>
where
    F: FnMut(u32, String) -> Fut,
    Fut: Future<Output = Listed>,
{
    let (mut ids, mut token) = (Vec::new(), String::new());
    for page in 0.. {
        assert!(page <= ITEMS, "pagination does not end");
        let (got, next) = list(PAGE, token).await.expect("a page");
        let last = next.is_empty();
        if !last {
            assert_eq!(got.len(), PAGE as usize, "a page before the last is full");
        }
        ids.extend(got);
        if last {
            return ids;
        }
        token = next;
    }
    unreachable!()
}

/// Asserts `ids` are strictly ascending (so each comes once) and are `want`, sorted.
fn assert_every_id_once(ids: &[u64], want: &[u64]) {
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ascending: {ids:?}");
    let mut want = want.to_vec();
    want.sort_unstable();
    assert_eq!(ids, want);
}

/// Asserts a list call failed with INVALID_ARGUMENT naming `page_token`.
fn assert_bad_token(result: Listed, what: &str) {
    let err = result.expect_err(what);
    assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err:?}");
    assert!(err.message().contains("page_token"), "{what}: {err:?}");
}

fn net(channel: &Channel) -> NetServiceClient<Channel> {
    NetServiceClient::new(channel.clone())
}

async fn create_loop(channel: &Channel, name: &str) {
    LoopServiceClient::new(channel.clone())
        .create_loop(pb::CreateLoopRequest {
            r#loop: name.into(),
            ..Default::default()
        })
        .await
        .expect("CreateLoop");
}

async fn list_servers(channel: &Channel, loop_name: &str, size: u32, token: String) -> Listed {
    let r = net(channel)
        .list_servers(pb::ListServersRequest {
            r#loop: loop_name.into(),
            page_size: size,
            page_token: token,
        })
        .await?
        .into_inner();
    let ids = r.servers.iter().map(|s| s.server_id).collect();
    Ok((ids, r.next_page_token))
}

/// An echo server on 127.0.0.1 with a free port: its id and port.
async fn echo_server(channel: &Channel) -> (u64, u16) {
    tcp_server(channel, pb::ServerProtocol::Echo, 0).await
}

#[tokio::test]
async fn servers_are_listed_a_page_at_a_time() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let mut created = Vec::new();
    for _ in 0..ITEMS {
        created.push(echo_server(&channel).await.0);
    }
    let ids = walk(|size, token| list_servers(&channel, "", size, token)).await;
    assert_every_id_once(&ids, &created);

    let (all, next) = list_servers(&channel, "", 0, String::new()).await.unwrap();
    assert_eq!(all.len(), ITEMS, "page_size 0 is the default page");
    assert!(next.is_empty(), "{next:?}");

    let (first, token) = list_servers(&channel, "", PAGE, String::new())
        .await
        .unwrap();
    // "" and "default" name one loop, so a token from one serves the other.
    let (second, _) = list_servers(&channel, "default", PAGE, token.clone())
        .await
        .expect("the empty name's token on `default`");
    assert_eq!(
        second.first(),
        created.get(first.len()),
        "{first:?} {second:?}"
    );
    create_loop(&channel, "other").await;
    let other = list_servers(&channel, "other", PAGE, token).await;
    assert_bad_token(other, "another loop's token");
    let garbage = list_servers(&channel, "", PAGE, "garbage".into()).await;
    assert_bad_token(garbage, "a garbage token");
}

async fn list_transports(
    channel: &Channel,
    server_id: u64,
    include_closed: bool,
    size: u32,
    token: String,
) -> Listed {
    let r = net(channel)
        .list_transports(pb::ListTransportsRequest {
            server_id,
            include_closed,
            page_size: size,
            page_token: token,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ids = r.transports.iter().map(|t| t.transport_id).collect();
    Ok((ids, r.next_page_token))
}

/// The transports of `server_id` once there are `n` of them.
async fn accepted(channel: &Channel, server_id: u64, n: usize) -> Vec<u64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (ids, _) = list_transports(channel, server_id, false, 0, String::new())
            .await
            .expect("ListTransports");
        if ids.len() == n {
            return ids;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{n} accepted in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn transports_are_listed_a_page_at_a_time() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let (server, port) = echo_server(&channel).await;
    let (quiet, _) = echo_server(&channel).await;
    let peers: Vec<_> = (0..ITEMS)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let created = accepted(&channel, server, ITEMS).await;
    assert_eq!(created.len(), ITEMS, "page_size 0 is the default page");

    let ids = walk(|size, token| list_transports(&channel, server, false, size, token)).await;
    assert_every_id_once(&ids, &created);
    let ids = walk(|size, token| list_transports(&channel, 0, true, size, token)).await;
    assert_every_id_once(&ids, &created);

    let (_, token) = list_transports(&channel, server, false, PAGE, String::new())
        .await
        .unwrap();
    assert!(!token.is_empty());
    let cases = [
        (0, false, "every server's"),
        (quiet, false, "another server's"),
        (server, true, "include_closed's"),
    ];
    for (server_id, include_closed, what) in cases {
        let other = list_transports(&channel, server_id, include_closed, PAGE, token.clone());
        assert_bad_token(other.await, what);
    }
    let garbage = list_transports(&channel, server, false, PAGE, "1.x".into()).await;
    assert_bad_token(garbage, "a garbage token");
    drop(peers);
}

async fn list_processes(channel: &Channel, loop_name: &str, size: u32, token: String) -> Listed {
    let r = ProcessServiceClient::new(channel.clone())
        .list_processes(pb::ListProcessesRequest {
            r#loop: loop_name.into(),
            page_size: size,
            page_token: token,
        })
        .await?
        .into_inner();
    let ids = r.processes.iter().map(|p| p.process_id).collect();
    Ok((ids, r.next_page_token))
}

#[tokio::test]
async fn processes_are_listed_a_page_at_a_time() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let client = Client::from_channel(channel.clone());
    let mut created = Vec::new();
    for _ in 0..ITEMS {
        let p = client.spawn("", &Command::from_argv(["true"])).await;
        created.push(p.expect("spawn").process_id.0);
    }
    let ids = walk(|size, token| list_processes(&channel, "", size, token)).await;
    assert_every_id_once(&ids, &created);

    let (all, next) = list_processes(&channel, "", 0, String::new())
        .await
        .unwrap();
    assert_eq!(all.len(), ITEMS, "page_size 0 is the default page");
    assert!(next.is_empty(), "{next:?}");

    let (_, token) = list_processes(&channel, "", PAGE, String::new())
        .await
        .unwrap();
    create_loop(&channel, "other").await;
    let other = list_processes(&channel, "other", PAGE, token).await;
    assert_bad_token(other, "another loop's token");
    let garbage = list_processes(&channel, "", PAGE, "garbage".into()).await;
    assert_bad_token(garbage, "a garbage token");

    // The client library follows the pages.
    let listed = client.list_processes("").await.expect("list_processes");
    let listed: Vec<u64> = listed.iter().map(|p| p.process_id.0).collect();
    assert_every_id_once(&listed, &created);
}

async fn list_timers(channel: &Channel, kind: pb::HandleKind, token: String) -> Listed {
    let r = loopd_proto::SchedulerServiceClient::new(channel.clone())
        .list_handles(pb::ListHandlesRequest {
            kind: kind as i32,
            page_size: PAGE,
            page_token: token,
            ..Default::default()
        })
        .await?
        .into_inner();
    let ids = r.handles.iter().map(|h| h.handle_id).collect();
    Ok((ids, r.next_page_token))
}

#[tokio::test]
async fn a_handle_token_belongs_to_its_kind_filter() {
    let daemon = Daemon::start();
    let channel = daemon.channel().await;
    let client = Client::from_channel(channel.clone());
    for _ in 0..ITEMS {
        let action = loopd_client::Action::default();
        let timer = client.call_later("", Duration::from_secs(60), action).await;
        timer.expect("call_later");
    }
    let (ids, token) = list_timers(&channel, pb::HandleKind::Timer, String::new())
        .await
        .unwrap();
    assert_eq!(ids.len(), PAGE as usize);
    let other = list_timers(&channel, pb::HandleKind::Soon, token).await;
    assert_bad_token(other, "another kind's token");
}

#[tokio::test]
async fn a_page_of_big_items_ends_before_the_message_limit() {
    const LIMIT: usize = 4096;
    let daemon = Daemon::start_with(&format!("[limits]\nmax_message_bytes = {LIMIT}\n"));
    let channel = daemon.channel().await;
    let client = Client::from_channel(channel.clone());
    let long = "x".repeat(LIMIT / 4);
    let mut created = Vec::new();
    for _ in 0..ITEMS {
        let p = client.spawn("", &Command::from_argv(["true", &long])).await;
        created.push(p.expect("spawn").process_id.0);
    }
    let (mut ids, mut token, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        pages += 1;
        assert!(pages <= ITEMS, "pagination does not end");
        // page_size 0 would be 1000 processes: the byte budget ends the page first.
        let (got, next) = list_processes(&channel, "", 0, token)
            .await
            .expect("a page");
        assert!(!got.is_empty(), "every page holds at least one process");
        ids.extend(got);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert!(
        pages > 1,
        "{ITEMS} processes of {} bytes fit no page",
        LIMIT / 4
    );
    assert_every_id_once(&ids, &created);
}
