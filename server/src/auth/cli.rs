//! `server user …` and `server device …`: accounts and devices from the command line, on the
//! data directory of a stopped server (sled lets one process open it; with the server running,
//! use the JSON API under `/v1/admin/`). Changes are audited as made from the command line.
//!
//! A password is read from `--password-stdin` (the first line of standard input), else from
//! the `HO_PASSWORD` environment variable, else asked for twice on the terminal without echo.
//! It is never printed.
//!
//! ```text
//! server user add admin --role administrator --area '*' --data-dir ./data
//! server user add lan --role enumerator --area '00004/Tổ dân phố 3' --data-dir ./data
//! server user assign lan '00004/Tổ dân phố 4' --data-dir ./data
//! server device revoke 0190a0b2-7c3d-7e4f-8a5b-6c7d8e9f0a1b --data-dir ./data
//! ```

use std::io::{BufRead, IsTerminal};
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use uuid::Uuid;

use super::{area_texts, vietnam_time, Actor, Area, Auth, AuthConfig, AuthError, NewUser};
use crate::scope::Role;
use crate::store::{Registry, StoreError};

/// The environment variable a password may come from.
pub const PASSWORD_ENV: &str = "HO_PASSWORD";

#[derive(Clone, Debug, Args)]
pub struct DataDir {
    /// Thư mục sổ hộ của máy chủ đang dừng / the registry directory of the stopped server.
    #[arg(long, env = "HO_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Args)]
pub struct PasswordSource {
    /// Đọc mật khẩu từ dòng đầu của stdin / read the password from the first line of stdin.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Tạo tài khoản / create an account.
    Add {
        /// Tên đăng nhập / the user name (a-z, 0-9, '.', '_', '-').
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// Khu vực, lặp lại được / an area, repeatable: 00004/Thôn Đông (enumerator),
        /// 00004 (supervisor), 01 or '*' (administrator).
        #[arg(long = "area", value_name = "AREA")]
        areas: Vec<String>,
        #[command(flatten)]
        password: PasswordSource,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Đặt lại mật khẩu / set a new password (ends the user's sessions).
    Passwd {
        name: String,
        #[command(flatten)]
        password: PasswordSource,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Giao thêm khu vực / assign areas.
    Assign {
        name: String,
        #[arg(required = true, value_name = "AREA")]
        areas: Vec<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Bỏ khu vực / unassign areas.
    Unassign {
        name: String,
        #[arg(required = true, value_name = "AREA")]
        areas: Vec<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Đổi vai trò, với khu vực của vai trò mới / change the role, with the new role's areas.
    Role {
        name: String,
        #[arg(long, value_parser = parse_role)]
        role: Role,
        #[arg(long = "area", value_name = "AREA")]
        areas: Vec<String>,
        #[command(flatten)]
        dir: DataDir,
    },
    /// Danh sách tài khoản / list accounts.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeviceCommand {
    /// Danh sách thiết bị / list enrolled devices.
    List {
        #[command(flatten)]
        dir: DataDir,
    },
    /// Thu hồi thiết bị / revoke a device: its next push is kept for review, it gets no data.
    Revoke {
        device_id: Uuid,
        #[command(flatten)]
        dir: DataDir,
    },
}

fn parse_role(text: &str) -> Result<Role, String> {
    Role::parse(text).ok_or_else(|| {
        format!(
            "không có vai trò '{text}' / no role '{text}': enumerator, supervisor or administrator"
        )
    })
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("không mở được sổ hộ tại {dir} / cannot open the registry in {dir}: {source}. If the server is running, stop it first or use the JSON API (/v1/admin/…)")]
    Open { dir: PathBuf, source: StoreError },
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Password(String),
}

fn open(dir: &Path) -> Result<Auth, CliError> {
    let open_error = |source| CliError::Open {
        dir: dir.to_path_buf(),
        source,
    };
    if !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|error| CliError::Open {
            dir: dir.to_path_buf(),
            source: StoreError::Inconsistent(error.to_string()),
        })?;
    }
    let registry = Registry::open(dir).map_err(open_error)?;
    Auth::open(&registry, AuthConfig::default()).map_err(open_error)
}

/// Reads a new password: stdin's first line, `HO_PASSWORD`, or the terminal twice.
pub fn read_password(source: &PasswordSource, prompt: &str) -> Result<String, CliError> {
    if source.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|error| {
                CliError::Password(format!("không đọc được stdin / cannot read stdin: {error}"))
            })?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_string());
    }
    if let Ok(password) = std::env::var(PASSWORD_ENV) {
        return Ok(password);
    }
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Password(format!(
            "cần mật khẩu / a password is needed: give --password-stdin, set {PASSWORD_ENV}, or run in a terminal"
        )));
    }
    let first = rpassword::prompt_password(format!("{prompt}: ")).map_err(|error| {
        CliError::Password(format!(
            "không đọc được mật khẩu / cannot read the password: {error}"
        ))
    })?;
    let again = rpassword::prompt_password("Nhập lại / Again: ").map_err(|error| {
        CliError::Password(format!(
            "không đọc được mật khẩu / cannot read the password: {error}"
        ))
    })?;
    if first != again {
        return Err(CliError::Password(
            "hai lần nhập không khớp / the two entries differ: nothing was changed".to_string(),
        ));
    }
    Ok(first)
}

fn parse_areas(auth: &Auth, texts: &[String]) -> Result<Vec<Area>, CliError> {
    texts
        .iter()
        .map(|text| Area::parse(text, auth.areas()).map_err(CliError::from))
        .collect()
}

fn describe(user: &crate::store::UserRecord) -> String {
    format!(
        "{} — {} ({}) — {}",
        user.username,
        user.role.label_vi(),
        user.role.as_str(),
        match area_texts(&user.scope).join(", ") {
            areas if areas.is_empty() => "chưa có khu vực / no areas".to_string(),
            areas => areas,
        }
    )
}

/// Runs a `server user` command; returns what to print.
pub fn run_user(command: UserCommand) -> Result<String, CliError> {
    let actor = Actor::command_line();
    match command {
        UserCommand::Add {
            name,
            role,
            areas,
            password,
            dir,
        } => {
            let auth = open(&dir.data_dir)?;
            let areas = parse_areas(&auth, &areas)?;
            let password = read_password(&password, "Mật khẩu mới / New password")?;
            let user = auth.create_user(
                &actor,
                NewUser {
                    username: name,
                    password,
                    role,
                    areas,
                },
            )?;
            Ok(format!(
                "Đã tạo tài khoản / Account created: {}",
                describe(&user)
            ))
        }
        UserCommand::Passwd {
            name,
            password,
            dir,
        } => {
            let auth = open(&dir.data_dir)?;
            let password = read_password(&password, "Mật khẩu mới / New password")?;
            let user = auth.set_password(&actor, &name, &password)?;
            Ok(format!(
                "Đã đặt mật khẩu mới cho {} / New password set for {}",
                user.username, user.username
            ))
        }
        UserCommand::Assign { name, areas, dir } => {
            let auth = open(&dir.data_dir)?;
            let areas = parse_areas(&auth, &areas)?;
            let user = auth.change_areas(&actor, &name, &areas, &[])?;
            Ok(format!(
                "Đã giao khu vực / Areas assigned: {}",
                describe(&user)
            ))
        }
        UserCommand::Unassign { name, areas, dir } => {
            let auth = open(&dir.data_dir)?;
            let areas = parse_areas(&auth, &areas)?;
            let user = auth.change_areas(&actor, &name, &[], &areas)?;
            Ok(format!(
                "Đã bỏ khu vực / Areas unassigned: {}",
                describe(&user)
            ))
        }
        UserCommand::Role {
            name,
            role,
            areas,
            dir,
        } => {
            let auth = open(&dir.data_dir)?;
            let areas = parse_areas(&auth, &areas)?;
            let user = auth.set_role(&actor, &name, role, &areas)?;
            Ok(format!(
                "Đã đổi vai trò / Role changed: {}",
                describe(&user)
            ))
        }
        UserCommand::List { dir } => {
            let auth = open(&dir.data_dir)?;
            let users = auth.users(&actor)?;
            if users.is_empty() {
                return Ok("Chưa có tài khoản nào / No accounts yet: create the first administrator with `server user add NAME --role administrator --area '*'`".to_string());
            }
            Ok(users.iter().map(describe).collect::<Vec<_>>().join("\n"))
        }
    }
}

/// Runs a `server device` command; returns what to print.
pub fn run_device(command: DeviceCommand) -> Result<String, CliError> {
    let actor = Actor::command_line();
    match command {
        DeviceCommand::List { dir } => {
            let auth = open(&dir.data_dir)?;
            let devices = auth.devices(&actor)?;
            if devices.is_empty() {
                return Ok("Chưa có thiết bị nào / No enrolled devices".to_string());
            }
            Ok(devices
                .iter()
                .map(|device| {
                    let state = match &device.revoked {
                        None => "đang dùng / active".to_string(),
                        Some(r) => format!(
                            "đã thu hồi {} bởi {} / revoked {} by {}",
                            vietnam_time(r.at_ms),
                            r.by,
                            vietnam_time(r.at_ms),
                            r.by
                        ),
                    };
                    format!(
                        "{} — {} — đăng ký / enrolled {} — {state}",
                        device.device_id,
                        device.username,
                        vietnam_time(device.enrolled_ms)
                    )
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        DeviceCommand::Revoke { device_id, dir } => {
            let auth = open(&dir.data_dir)?;
            let device = auth.revoke_device(&actor, device_id)?;
            Ok(format!(
                "Đã thu hồi thiết bị {} của {} / Device {} of {} revoked: its next push is kept for review, it gets no data",
                device.device_id, device.username, device.device_id, device.username
            ))
        }
    }
}
