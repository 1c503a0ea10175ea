//! The accounts service without HTTP: sign-in, the limit, enrolment, revocation, areas and
//! who may administer whom.

use std::sync::atomic::AtomicI64;

use protocol::access::Scope;

use super::*;
use crate::store::Registry;

const PASSWORD: &str = "đồng lúa chín vàng";

struct Fixture {
    auth: Auth,
    clock: Arc<AtomicI64>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let registry = Registry::open(dir.path()).expect("open");
    let clock = Arc::new(AtomicI64::new(1_750_000_000_000));
    let auth = Auth::open(
        &registry,
        AuthConfig {
            clock: Clock::manual(Arc::clone(&clock)),
            ..AuthConfig::default()
        },
    )
    .expect("auth");
    Fixture {
        auth,
        clock,
        _dir: dir,
    }
}

fn add(auth: &Auth, actor: &Actor, name: &str, role: Role, areas: &[&str]) -> UserRecord {
    let areas = areas
        .iter()
        .map(|a| Area::parse(a, auth.areas()).expect("area"))
        .collect();
    auth.create_user(
        actor,
        NewUser {
            username: name.to_string(),
            password: PASSWORD.to_string(),
            role,
            areas,
        },
    )
    .expect("create")
}

fn events(auth: &Auth) -> Vec<AuditEvent> {
    auth.accounts()
        .audit_after(0, 1_000)
        .expect("audit")
        .into_iter()
        .map(|entry| entry.entry.event)
        .collect()
}

#[test]
fn areas_parse_and_fit_their_roles() {
    let f = fixture();
    let areas = f.auth.areas();
    assert!(matches!(Area::parse("00004/ Tổ 3", areas), Ok(Area::Village(v)) if v.name == "Tổ 3"));
    assert_eq!(
        Area::parse("00004", areas).ok(),
        Some(Area::Commune("00004".into()))
    );
    assert_eq!(
        Area::parse("01", areas).ok(),
        Some(Area::Province("01".into()))
    );
    assert_eq!(Area::parse("*", areas).ok(), Some(Area::Everything));
    for bad in ["99999", "00004/", "1", "abc", "77"] {
        assert!(Area::parse(bad, areas).is_err(), "{bad}");
    }
    let village = Area::parse("00004/Tổ 3", areas).expect("village");
    let commune = Area::parse("00004", areas).expect("commune");
    assert!(scope_for(Role::Enumerator, std::slice::from_ref(&commune)).is_err());
    assert!(scope_for(Role::Supervisor, std::slice::from_ref(&village)).is_err());
    assert!(scope_for(Role::Administrator, &[]).is_err());
    assert!(scope_for(Role::Administrator, &[Area::Everything, Area::Everything]).is_err());
    assert_eq!(
        scope_for(Role::Enumerator, &[village.clone(), village]).ok(),
        Some(Scope::Villages(vec![Village {
            commune_code: "00004".into(),
            name: "Tổ 3".into()
        }]))
    );
    assert!(check_username("Lan.Nguyen").is_ok());
    assert!(check_username("lan nguyen").is_err());
    assert!(check_username("nguyễn").is_err());
    assert!(check_username("ab").is_err());
}

#[test]
fn sign_in_gives_a_session_to_supervisors_and_refuses_enumerators() {
    let f = fixture();
    let cli = Actor::command_line();
    add(&f.auth, &cli, "giam.sat", Role::Supervisor, &["00004"]);
    add(&f.auth, &cli, "lan", Role::Enumerator, &["00004/Tổ 3"]);

    let signed_in = f.auth.login(" Giam.Sat ", PASSWORD, None).expect("sign in");
    let principal = f.auth.resolve(&signed_in.token, None).expect("resolve");
    assert_eq!(principal.username, "giam.sat");
    assert_eq!(principal.credential, Credential::Session);
    assert!(matches!(
        f.auth.login("lan", PASSWORD, None),
        Err(AuthError::Forbidden(_))
    ));
    assert!(matches!(
        f.auth.login("giam.sat", "sai mật khẩu rồi", None),
        Err(AuthError::Unauthenticated(_))
    ));
    assert!(matches!(
        f.auth.login("nobody", PASSWORD, None),
        Err(AuthError::Unauthenticated(_))
    ));
    // Sessions expire.
    f.clock.fetch_add(
        AuthConfig::default().session_ttl_ms,
        std::sync::atomic::Ordering::SeqCst,
    );
    assert!(matches!(
        f.auth.resolve(&signed_in.token, None),
        Err(AuthError::Unauthenticated(message)) if message.contains("expired")
    ));
    assert!(matches!(
        f.auth.resolve("hos_nonsense", None),
        Err(AuthError::Unauthenticated(_))
    ));
    let log = events(&f.auth);
    assert!(log.contains(&AuditEvent::SignIn));
    assert!(log.contains(&AuditEvent::SignInFailed));
    assert!(log.contains(&AuditEvent::AccessDenied));
}

#[test]
fn five_failures_lock_the_account_and_say_until_when() {
    let f = fixture();
    add(
        &f.auth,
        &Actor::command_line(),
        "giam.sat",
        Role::Supervisor,
        &["00004"],
    );
    for _ in 0..4 {
        assert!(matches!(
            f.auth.login("giam.sat", "đoán thử mật khẩu", None),
            Err(AuthError::Unauthenticated(_))
        ));
    }
    let locked = f.auth.login("giam.sat", "đoán thử mật khẩu", None);
    let Err(AuthError::Locked {
        retry_after_secs,
        message,
        until_ms,
    }) = locked
    else {
        panic!("the fifth failure locks: {:?}", locked.err());
    };
    assert_eq!(retry_after_secs, 15 * 60);
    assert!(message.contains(&vietnam_time(until_ms)), "{message}");
    // Even the right password waits.
    assert!(matches!(
        f.auth.login("giam.sat", PASSWORD, None),
        Err(AuthError::Locked { .. })
    ));
    f.clock
        .fetch_add(15 * 60 * 1000, std::sync::atomic::Ordering::SeqCst);
    assert!(f.auth.login("giam.sat", PASSWORD, None).is_ok());
    assert!(events(&f.auth).contains(&AuditEvent::Locked));
}

#[test]
fn devices_enrol_once_per_user_and_a_revoked_one_stays_known() {
    let f = fixture();
    let cli = Actor::command_line();
    add(&f.auth, &cli, "lan", Role::Enumerator, &["00004/Tổ 3"]);
    add(&f.auth, &cli, "minh", Role::Enumerator, &["00004/Tổ 4"]);
    let device = Uuid::now_v7();
    let first = f.auth.enrol("lan", PASSWORD, device, None).expect("enrol");
    let again = f
        .auth
        .enrol("lan", PASSWORD, device, None)
        .expect("enrol again");
    assert!(
        f.auth.resolve(&first.token, None).is_err(),
        "enrolling again replaces the token"
    );
    let principal = f.auth.resolve(&again.token, None).expect("resolve");
    assert_eq!(principal.device(), Some(device));
    assert!(!principal.is_revoked());
    assert!(matches!(
        f.auth.enrol("minh", PASSWORD, device, None),
        Err(AuthError::Conflict(_))
    ));

    f.auth.revoke_device(&cli, device).expect("revoke");
    let principal = f.auth.resolve(&again.token, None).expect("still known");
    assert!(principal.is_revoked());
    assert!(matches!(
        f.auth.enrol("lan", PASSWORD, device, None),
        Err(AuthError::Forbidden(_))
    ));
    assert!(events(&f.auth).contains(&AuditEvent::DeviceRevoked));
}

#[test]
fn a_province_administrator_manages_only_their_province() {
    let f = fixture();
    let cli = Actor::command_line();
    let hanoi = f
        .auth
        .areas()
        .province_of("00004")
        .expect("known")
        .code
        .clone();
    let other = f
        .auth
        .areas()
        .provinces()
        .find(|p| p.code != hanoi)
        .expect("another province")
        .code
        .clone();
    let elsewhere = f
        .auth
        .areas()
        .communes_of(&other)
        .next()
        .expect("a commune")
        .code
        .clone();
    add(&f.auth, &cli, "tinh", Role::Administrator, &[&hanoi]);
    add(&f.auth, &cli, "lan", Role::Enumerator, &["00004/Tổ 3"]);
    add(
        &f.auth,
        &cli,
        "xa.khac",
        Role::Supervisor,
        &[elsewhere.as_str()],
    );
    let session = f.auth.login("tinh", PASSWORD, None).expect("sign in");
    let actor = Actor::of(&f.auth.resolve(&session.token, None).expect("resolve")).expect("admin");

    let names: Vec<String> = f
        .auth
        .users(&actor)
        .expect("users")
        .into_iter()
        .map(|u| u.username)
        .collect();
    assert_eq!(names, vec!["lan".to_string(), "tinh".to_string()]);
    let village = Area::parse("00004/Tổ 5", f.auth.areas()).expect("area");
    let user = f
        .auth
        .change_areas(&actor, "lan", std::slice::from_ref(&village), &[])
        .expect("assign");
    assert_eq!(area_texts(&user.scope), vec!["00004/Tổ 3", "00004/Tổ 5"]);
    let user = f
        .auth
        .change_areas(
            &actor,
            "lan",
            &[],
            &[Area::parse("00004/tổ 3", f.auth.areas()).expect("area")],
        )
        .expect("unassign");
    assert_eq!(area_texts(&user.scope), vec!["00004/Tổ 5"]);
    assert!(matches!(
        f.auth.set_password(&actor, "xa.khac", "mật khẩu mới dài"),
        Err(AuthError::Forbidden(_))
    ));
    let far = Area::parse(&format!("{elsewhere}/Thôn 1"), f.auth.areas()).expect("area");
    assert!(matches!(
        f.auth.change_areas(&actor, "lan", &[far], &[]),
        Err(AuthError::Forbidden(_))
    ));
    assert!(matches!(
        f.auth
            .set_role(&actor, "lan", Role::Administrator, &[Area::Everything]),
        Err(AuthError::Forbidden(_))
    ));
    assert!(matches!(
        f.auth.set_role(
            &actor,
            "tinh",
            Role::Supervisor,
            &[Area::Commune("00004".into())]
        ),
        Err(AuthError::Forbidden(_))
    ));
    let supervisor = f
        .auth
        .set_role(
            &actor,
            "lan",
            Role::Supervisor,
            &[Area::Commune("00004".into())],
        )
        .expect("promote");
    assert_eq!(supervisor.scope, Scope::Communes(vec!["00004".into()]));

    // The audit log a province administrator reads names only their users.
    let entries = f.auth.audit(&actor, 0, 100).expect("audit");
    assert!(!entries.is_empty());
    assert!(entries
        .iter()
        .all(|e| e.entry.actor != "xa.khac" && e.entry.subject != "xa.khac"));
    let all = f.auth.audit(&cli, 0, 100).expect("audit");
    assert!(all.iter().any(|e| e.entry.subject == "xa.khac"));
    // Nothing secret in the log.
    for entry in all {
        assert!(!entry.entry.detail.contains(PASSWORD));
        assert!(!entry.entry.detail.contains(&session.token));
    }
}

#[test]
fn a_password_reset_ends_the_users_sessions() {
    let f = fixture();
    let cli = Actor::command_line();
    add(&f.auth, &cli, "giam.sat", Role::Supervisor, &["00004"]);
    let session = f.auth.login("giam.sat", PASSWORD, None).expect("sign in");
    f.auth
        .set_password(&cli, "giam.sat", "mật khẩu mới dài hơn")
        .expect("reset");
    assert!(f.auth.resolve(&session.token, None).is_err());
    assert!(f.auth.login("giam.sat", PASSWORD, None).is_err());
    assert!(f
        .auth
        .login("giam.sat", "mật khẩu mới dài hơn", None)
        .is_ok());
    assert!(matches!(
        f.auth.set_password(&cli, "giam.sat", "ngắn"),
        Err(AuthError::Invalid(_))
    ));
    assert!(matches!(
        f.auth.create_user(
            &cli,
            NewUser {
                username: "giam.sat".into(),
                password: PASSWORD.into(),
                role: Role::Supervisor,
                areas: vec![],
            }
        ),
        Err(AuthError::Conflict(_))
    ));
}
