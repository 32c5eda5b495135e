//! PUT/GET throughput of 1 MiB objects against the S3 servers started by
//! `tests/servers/start.sh` (run through `contrib/bench-store.sh`), and against a local
//! directory for reference. Prints one line per case.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use s3fs::runtime::block_on;
use s3fs::store::open::Credentials;
use s3fs::store::{PutMode, StorageUrl, Store, open_store};

const OBJECT: usize = 1 << 20;
const COUNT: usize = 128;

fn bench(label: &str, store: Arc<dyn Store>, parallel: usize) {
    let body = Bytes::from((0..OBJECT).map(|i| (i * 7 + i / 4096) as u8).collect::<Vec<u8>>());
    let keys: Vec<String> = (0..COUNT).map(|i| format!("bench-{parallel}-{i}")).collect();
    let run = |put: bool| {
        let start = Instant::now();
        block_on(async {
            let mut tasks = tokio::task::JoinSet::new();
            for k in keys.clone() {
                while tasks.len() >= parallel {
                    tasks.join_next().await.unwrap().unwrap();
                }
                let (s, b) = (store.clone(), body.clone());
                tasks.spawn(async move {
                    if put {
                        s.put(&k, b, PutMode::Overwrite).await.unwrap();
                    } else {
                        assert_eq!(s.get(&k, u64::MAX).await.unwrap().len(), OBJECT);
                    }
                });
            }
            while let Some(r) = tasks.join_next().await {
                r.unwrap();
            }
        });
        (COUNT * OBJECT) as f64 / start.elapsed().as_secs_f64() / 1e6
    };
    let put = run(true);
    let get = run(false);
    println!("{label:<8} parallel {parallel:>2}: PUT {put:7.1} MB/s   GET {get:7.1} MB/s   (1 MiB objects x {COUNT})");
    block_on(store.delete_many(&keys)).unwrap();
}

fn main() {
    // `cargo bench` passes --bench; ignore arguments.
    let dir = tempfile::tempdir().unwrap();
    let local = open_store(
        &StorageUrl::parse(&format!("local://{}", dir.path().display())).unwrap(),
        "",
        None,
    )
    .unwrap();
    for p in [1, 8, 32] {
        bench("local", local.clone(), p);
    }
    for server in ["GARAGE", "MOTO"] {
        let var = |k: &str| std::env::var(format!("S3FS_TEST_{server}_{k}"));
        let Ok(url) = var("URL") else {
            eprintln!("S3FS_TEST_{server}_URL not set: run through contrib/bench-store.sh to include {server}");
            continue;
        };
        let url = StorageUrl::parse(&format!("{}/bench/", url.trim_end_matches('/'))).unwrap();
        let creds = Credentials {
            login: var("LOGIN").unwrap(),
            password: var("PASSWORD").unwrap(),
        };
        let store = open_store(&url, &var("OPTIONS").unwrap(), Some(creds)).unwrap();
        for p in [1, 8, 32] {
            bench(&server.to_lowercase(), store.clone(), p);
        }
    }
}
