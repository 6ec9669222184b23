//! What a call's token costs without the gate's cache: an RS256 verification, against the
//! cache hit the gate serves most calls from (a hash lookup of the token).

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use criterion::{criterion_group, criterion_main, Criterion};
use strata_auth::{token, Account, AccountKind, KeyMaterial, Signer};

fn tokens(c: &mut Criterion) {
    let key = KeyMaterial::generate().unwrap();
    let signer = Signer::new(&key);
    let account = Account {
        id: "bench".into(),
        name: "bench".into(),
        kind: AccountKind::User,
        scopes: vec!["admin".into()],
        metadata: BTreeMap::new(),
        issuer: "bench".into(),
        secret_hash: String::new(),
        generation: 1,
        created_ms: 0,
    };
    let (jwt, claims) = signer.issue(&account, token::now_s(), 3600).unwrap();
    c.bench_function("rs256_verify", |b| b.iter(|| signer.verify(&jwt).unwrap()));
    let mut cache = lru::LruCache::new(NonZeroUsize::new(16_384).unwrap());
    cache.put(jwt.clone(), claims);
    c.bench_function("cache_hit", |b| {
        b.iter(|| cache.get(jwt.as_str()).map(|c| c.exp).unwrap())
    });
    c.bench_function("rs256_sign", |b| {
        b.iter(|| signer.issue(&account, token::now_s(), 3600).unwrap())
    });
}

criterion_group!(benches, tokens);
criterion_main!(benches);
