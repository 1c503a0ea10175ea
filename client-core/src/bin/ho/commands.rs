//! The commands: arguments checked into a [`Command`], then run against the store.

use std::io::IsTerminal;
use std::path::PathBuf;

use client_core::store::Store;
use client_core::sync::{Phase, Progress};
use client_core::transport::check_base_url;
use client_core::HttpTransport;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use protocol::household::{
    Date, Dwelling, Household, HouseholdFlags, IncomeEvidence, Member, PovertyCauses, Relationship,
    ReviewRound, RoundKind, Sex, VoidMark,
};
use serde_json::json;
use uuid::Uuid;

use crate::input::{self, resolve_household, resolve_member};
use crate::render;
use crate::{CommandArgs, Config, Fail, MemberAction};

/// A new household typed on the command line.
#[derive(Debug)]
pub struct NewHousehold {
    commune: String,
    village: String,
    address: String,
    head_name: String,
    head_dob: Date,
    head_sex: Sex,
    head_personal_id: Option<String>,
    year: Option<u16>,
    round: RoundKind,
    income: Option<u64>,
}

#[derive(Debug)]
pub struct Edits {
    file: Option<PathBuf>,
    address: Option<String>,
    village: Option<String>,
    commune: Option<String>,
    income: Option<u64>,
    floor_area: Option<u32>,
}

#[derive(Debug)]
pub struct NewMember {
    name: String,
    dob: Date,
    sex: Sex,
    relationship: Relationship,
    personal_id: Option<String>,
    insured: bool,
}

/// A command with its arguments checked.
#[derive(Debug)]
pub enum Command {
    Init {
        server: String,
        device_id: Option<Uuid>,
        user: String,
        password_stdin: bool,
    },
    AddFile(PathBuf),
    Add(Box<NewHousehold>),
    Edit {
        id: String,
        edits: Edits,
    },
    MemberAdd {
        id: String,
        member: NewMember,
    },
    MemberRemove {
        id: String,
        member: String,
    },
    Void {
        id: String,
        mark: VoidMark,
    },
    Unvoid {
        id: String,
    },
    List,
    Show {
        id: String,
    },
    Pending,
    ExportPending {
        file: PathBuf,
    },
    Conflicts,
    Rejected,
    Sync,
}

impl Command {
    /// Checks the parsed arguments; a `--json` after the command name sets `json`.
    pub fn from_args(args: CommandArgs, json: &mut bool) -> Result<Command, Fail> {
        let command = match args {
            CommandArgs::Init {
                server,
                device_id,
                user,
                password_stdin,
                out,
            } => {
                *json |= out.json;
                let server = check_base_url(&server).map_err(|e| Fail::Input(e.to_string()))?;
                Command::Init {
                    server,
                    device_id,
                    user: user.trim().to_string(),
                    password_stdin,
                }
            }
            CommandArgs::Add(add) => match add.file {
                Some(file) => Command::AddFile(file),
                None => {
                    let missing = || {
                        Fail::Input(
                            "thiếu thông tin hộ / the household is incomplete: give --commune, --village, --address, --head-name, --head-dob and --head-sex, or --json FILE".to_string(),
                        )
                    };
                    Command::Add(Box::new(NewHousehold {
                        commune: add.commune.ok_or_else(missing)?,
                        village: add.village.ok_or_else(missing)?,
                        address: add.address.ok_or_else(missing)?,
                        head_name: add.head_name.ok_or_else(missing)?,
                        head_dob: add.head_dob.ok_or_else(missing)?,
                        head_sex: add.head_sex.ok_or_else(missing)?.into(),
                        head_personal_id: add.head_personal_id,
                        year: add.year,
                        round: add.round.into(),
                        income: add.income,
                    }))
                }
            },
            CommandArgs::Edit(edit) => {
                let edits = Edits {
                    file: edit.file,
                    address: edit.address,
                    village: edit.village,
                    commune: edit.commune,
                    income: edit.income,
                    floor_area: edit.floor_area,
                };
                if edits.file.is_none()
                    && edits.address.is_none()
                    && edits.village.is_none()
                    && edits.commune.is_none()
                    && edits.income.is_none()
                    && edits.floor_area.is_none()
                {
                    return Err(Fail::Input(
                        "không có gì để sửa / nothing to change: give --address, --village, --commune, --income, --floor-area or --json FILE".to_string(),
                    ));
                }
                Command::Edit { id: edit.id, edits }
            }
            CommandArgs::Member { action } => match action {
                MemberAction::Add {
                    id,
                    name,
                    dob,
                    sex,
                    relationship,
                    personal_id,
                    no_insurance,
                    out,
                } => {
                    *json |= out.json;
                    if name.trim().is_empty() {
                        return Err(Fail::Input(
                            "họ tên thành viên trống / the member's name is empty: give --name"
                                .to_string(),
                        ));
                    }
                    Command::MemberAdd {
                        id,
                        member: NewMember {
                            name: name.trim().to_string(),
                            dob,
                            sex: sex.into(),
                            relationship: relationship.into(),
                            personal_id,
                            insured: !no_insurance,
                        },
                    }
                }
                MemberAction::Remove { id, member, out } => {
                    *json |= out.json;
                    Command::MemberRemove { id, member }
                }
            },
            CommandArgs::Void {
                id,
                reason,
                note,
                out,
            } => {
                *json |= out.json;
                Command::Void {
                    id,
                    mark: VoidMark {
                        reason: reason.into(),
                        note,
                    },
                }
            }
            CommandArgs::Unvoid { id, out } => {
                *json |= out.json;
                Command::Unvoid { id }
            }
            CommandArgs::List { out } => {
                *json |= out.json;
                Command::List
            }
            CommandArgs::Show { id, out } => {
                *json |= out.json;
                Command::Show { id }
            }
            CommandArgs::Pending { out } => {
                *json |= out.json;
                Command::Pending
            }
            CommandArgs::ExportPending { file, out } => {
                *json |= out.json;
                Command::ExportPending { file }
            }
            CommandArgs::Conflicts { out } => {
                *json |= out.json;
                Command::Conflicts
            }
            CommandArgs::Rejected { out } => {
                *json |= out.json;
                Command::Rejected
            }
            CommandArgs::Sync { out } => {
                *json |= out.json;
                Command::Sync
            }
        };
        Ok(command)
    }
}

pub fn run(config: &Config, command: Command) -> Result<(), Fail> {
    if let Command::Init {
        server,
        device_id,
        user,
        password_stdin,
    } = command
    {
        return init(config, &server, device_id, &user, password_stdin);
    }
    let store = open_existing(config)?;
    match command {
        Command::Init { .. } => Ok(()),
        Command::AddFile(path) => {
            let household = input::read_household_file(&path, None)?;
            add(config, &store, household)
        }
        Command::Add(new) => add(config, &store, household_from_flags(*new)),
        Command::Edit { id, edits } => edit(config, &store, &id, edits),
        Command::MemberAdd { id, member } => member_add(config, &store, &id, member),
        Command::MemberRemove { id, member } => member_remove(config, &store, &id, &member),
        Command::Void { id, mark } => {
            let local = resolve_household(&store, &id)?;
            let receipt = store.void_household(local.id, mark)?;
            render::saved(
                config,
                &store,
                "Đã hủy hộ / Voided household",
                &receipt,
                None,
            )
        }
        Command::Unvoid { id } => {
            let local = resolve_household(&store, &id)?;
            if !local.is_voided() {
                return Err(Fail::Input(format!(
                    "hộ {} chưa bị hủy / household {} is not voided: nothing to undo",
                    local.id, local.id
                )));
            }
            let receipt = store.unvoid_household(local.id)?;
            render::saved(
                config,
                &store,
                "Đã bỏ hủy hộ / Restored household",
                &receipt,
                None,
            )
        }
        Command::List => render::list(config, &store),
        Command::Show { id } => {
            let local = resolve_household(&store, &id)?;
            render::show(config, &store, &local)
        }
        Command::Pending => render::pending(config, &store),
        Command::ExportPending { file } => export_pending(config, &store, &file),
        Command::Conflicts => render::conflicts(config, &store),
        Command::Rejected => render::rejected(config, &store),
        Command::Sync => sync(config, &store),
    }
}

/// Writes the outbox to a new file and syncs it to disk.
fn export_pending(config: &Config, store: &Store, file: &std::path::Path) -> Result<(), Fail> {
    let shown = file.display();
    let mut handle = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
        .map_err(|error| {
            Fail::Input(format!(
                "không tạo được tệp {shown} / cannot create {shown}: {error}. Name a file that does not exist yet"
            ))
        })?;
    let count = store
        .export_pending(&mut std::io::BufWriter::new(&mut handle))
        .map_err(|error| Fail::Failed(error.to_string()))?;
    handle.sync_all().map_err(|error| {
        Fail::Failed(format!(
            "không ghi được tệp {shown} xuống đĩa / {shown} could not be synced to disk: {error}"
        ))
    })?;
    if config.json {
        render::print_json(&json!({"ok": true, "exported": count, "file": shown.to_string()}));
    } else {
        out!(
            "Đã xuất {count} thay đổi chờ gửi vào {shown} / Exported {count} pending changes to {shown}"
        );
    }
    Ok(())
}

/// The environment variable `ho init` reads the password from without `--password-stdin`.
const PASSWORD_ENV: &str = "HO_PASSWORD";

/// The user's password: stdin's first line, `HO_PASSWORD`, or asked on the terminal without
/// echo. Never printed.
fn read_password(user: &str, from_stdin: bool) -> Result<String, Fail> {
    if from_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).map_err(|error| {
            Fail::Input(format!("không đọc được stdin / cannot read stdin: {error}"))
        })?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Fail::Input(format!(
            "cần mật khẩu / a password is needed: give --password-stdin or set {PASSWORD_ENV}"
        )));
    }
    rpassword::prompt_password(format!("Mật khẩu của {user} / Password for {user}: ")).map_err(
        |error| {
            Fail::Input(format!(
                "không đọc được mật khẩu / cannot read the password: {error}"
            ))
        },
    )
}

/// Sets the device up against a server and enrols it for `user` (online, once): the server
/// checks the password and issues a device token, which the store keeps.
fn init(
    config: &Config,
    server: &str,
    device_id: Option<Uuid>,
    user: &str,
    password_stdin: bool,
) -> Result<(), Fail> {
    if user.is_empty() {
        return Err(Fail::Input(
            "thiếu tên đăng nhập / the user name is empty: give --user NAME".to_string(),
        ));
    }
    let password = read_password(user, password_stdin)?;
    let store = Store::open(&config.store)?;
    let device_id = match (device_id, store.device_id()?) {
        (Some(id), _) => id,
        (None, Some(existing)) => existing,
        (None, None) => Uuid::new_v4(),
    };
    store.setup(server, device_id)?;
    let transport =
        HttpTransport::new(server).map_err(|e| Fail::from(client_core::SyncError::from(e)))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Fail::Failed(format!(
                "không khởi động được bộ chạy / could not start the runtime: {e}"
            ))
        })?;
    let enrolled = runtime
        .block_on(transport.enrol(user, &password, device_id))
        .map_err(|error| {
            Fail::Failed(format!(
                "không đăng ký được thiết bị / the device could not be enrolled: {error}"
            ))
        })?;
    store.set_enrolment(&client_core::store::Enrolment {
        user: enrolled.user.clone(),
        token: enrolled.token.clone(),
    })?;
    if config.json {
        render::print_json(&json!({
            "ok": true,
            "store": config.store.display().to_string(),
            "server": server,
            "device_id": device_id.to_string(),
            "user": enrolled.user,
            "role": enrolled.role,
            "areas": enrolled.areas,
        }));
    } else {
        out!(
            "Đã thiết lập và đăng ký thiết bị / Device set up and enrolled\n  Máy chủ / Server: {server}\n  Người dùng / User: {} ({})\n  Khu vực / Areas: {}\n  Mã thiết bị / Device id: {device_id}\n  Dữ liệu / Store: {}",
            enrolled.user,
            enrolled.role,
            if enrolled.areas.is_empty() {
                "chưa được giao / none assigned yet".to_string()
            } else {
                enrolled.areas.join(", ")
            },
            config.store.display()
        );
    }
    Ok(())
}

fn open_existing(config: &Config) -> Result<Store, Fail> {
    if !config.store.exists() {
        return Err(Fail::Input(format!(
            "chưa có dữ liệu tại {path} / there is no data store at {path}: run `ho init --server URL --user NAME` first, or point --store (or HO_STORE) at the right folder",
            path = config.store.display()
        )));
    }
    Ok(Store::open(&config.store)?)
}

fn household_from_flags(new: NewHousehold) -> Household {
    let head = Member {
        id: Uuid::now_v7(),
        full_name: new.head_name.trim().to_string(),
        sex: new.head_sex,
        date_of_birth: new.head_dob,
        personal_id: new.head_personal_id,
        relationship: Relationship::Head,
        ethnicity: None,
        in_school: None,
        qualification: None,
        employment: None,
        has_pension: None,
        health_insurance: None,
        disability_or_severe_illness: None,
        child_nutrition: None,
    };
    let this_year = u16::try_from(client_core::clock::today().year).unwrap_or(2025);
    Household {
        id: Uuid::now_v7(),
        round: ReviewRound {
            year: new.year.unwrap_or(this_year),
            kind: new.round,
        },
        commune_code: new.commune.trim().to_string(),
        village: new.village.trim().to_string(),
        address: new.address.trim().to_string(),
        gps: None,
        head_member_id: Some(head.id),
        members: vec![head],
        flags: HouseholdFlags::default(),
        income: IncomeEvidence {
            estimated_per_person_vnd: new.income,
            ..IncomeEvidence::default()
        },
        dwelling: Dwelling::default(),
        causes_of_poverty: PovertyCauses::default(),
        support_needs: Vec::new(),
        void: None,
    }
}

fn add(config: &Config, store: &Store, household: Household) -> Result<(), Fail> {
    if store.household(household.id)?.is_some() {
        return Err(Fail::Input(format!(
            "hộ {id} đã có trên máy / household {id} is already on this device: use `ho edit {id}` to change it",
            id = household.id
        )));
    }
    let receipt = store.save_household(&household)?;
    render::saved(
        config,
        store,
        "Đã lưu hộ mới / Saved new household",
        &receipt,
        None,
    )
}

fn edit(config: &Config, store: &Store, prefix: &str, edits: Edits) -> Result<(), Fail> {
    let local = resolve_household(store, prefix)?;
    let mut household = match &edits.file {
        Some(path) => input::read_household_file(path, Some(local.id))?,
        None => input::record_of(&local)?,
    };
    if let Some(address) = edits.address {
        household.address = address.trim().to_string();
    }
    if let Some(village) = edits.village {
        household.village = village.trim().to_string();
    }
    if let Some(commune) = edits.commune {
        household.commune_code = commune.trim().to_string();
    }
    if let Some(income) = edits.income {
        household.income.estimated_per_person_vnd = Some(income);
    }
    if let Some(area) = edits.floor_area {
        household.dwelling.floor_area_m2 = Some(area);
    }
    let receipt = store.save_household(&household)?;
    render::saved(
        config,
        store,
        "Đã lưu thay đổi / Saved changes",
        &receipt,
        None,
    )
}

fn member_add(config: &Config, store: &Store, prefix: &str, new: NewMember) -> Result<(), Fail> {
    let local = resolve_household(store, prefix)?;
    let mut household = input::record_of(&local)?;
    let member = Member {
        id: Uuid::now_v7(),
        full_name: new.name,
        sex: new.sex,
        date_of_birth: new.dob,
        personal_id: new.personal_id,
        relationship: new.relationship,
        ethnicity: None,
        in_school: None,
        qualification: None,
        employment: None,
        has_pension: None,
        health_insurance: Some(new.insured),
        disability_or_severe_illness: None,
        child_nutrition: None,
    };
    if new.relationship == Relationship::Head && household.head().is_none() {
        household.head_member_id = Some(member.id);
    }
    let member_id = member.id;
    household.members.push(member);
    let receipt = store.save_household(&household)?;
    render::saved(
        config,
        store,
        "Đã thêm thành viên / Added member",
        &receipt,
        Some(member_id),
    )
}

fn member_remove(config: &Config, store: &Store, prefix: &str, member: &str) -> Result<(), Fail> {
    let local = resolve_household(store, prefix)?;
    let mut household = input::record_of(&local)?;
    let index = resolve_member(&household, member)?;
    let removed = household.members.remove(index);
    if household.head_member_id == Some(removed.id) {
        household.head_member_id = None;
    }
    let receipt = store.save_household(&household)?;
    render::saved(
        config,
        store,
        &format!(
            "Đã bớt thành viên {} / Removed member {}",
            removed.full_name, removed.full_name
        ),
        &receipt,
        Some(removed.id),
    )
}

fn sync(config: &Config, store: &Store) -> Result<(), Fail> {
    let url = store.server_url()?.ok_or_else(|| {
        Fail::Input(
            "thiết bị chưa được thiết lập / this device is not set up: run `ho init --server URL --user NAME` first"
                .to_string(),
        )
    })?;
    let enrolment = store.enrolment()?.ok_or_else(|| {
        Fail::Input(
            "thiết bị chưa được đăng ký / this device is not enrolled: run `ho init --server URL --user NAME` while online"
                .to_string(),
        )
    })?;
    let transport = HttpTransport::new(&url)
        .map_err(|e| Fail::from(client_core::SyncError::from(e)))?
        .with_token(&enrolment.token);
    let bar = if config.json || !std::io::stdout().is_terminal() {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stdout());
        let style = ProgressStyle::with_template("{spinner} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        bar
    };
    let on_progress = |progress: &Progress| {
        bar.set_length(progress.to_push.max(1) as u64);
        bar.set_position(progress.pushed as u64);
        let phase = match progress.phase {
            Phase::Pushing => "đang gửi / pushing",
            Phase::Pulling => "đang nhận / pulling",
            Phase::Done => "xong / done",
        };
        bar.set_message(format!(
            "{phase}: đã gửi/pushed {}/{} · đã nhận/pulled {}",
            progress.pushed, progress.to_push, progress.pulled
        ));
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            Fail::Failed(format!(
                "không khởi động được bộ chạy / could not start the runtime: {e}"
            ))
        })?;
    let result = runtime.block_on(client_core::sync(store, &transport, on_progress));
    bar.finish_and_clear();
    let report = result?;
    // The reference data follows the server's; a failure here does not fail the sync.
    let reference = runtime
        .block_on(client_core::reference::update(store, &url))
        .map_err(|error| error.to_string());
    render::sync_report(config, store, &url, &report, &reference)
}
