//! `ho`: the enumerator's field app for the poor / near-poor household review.
//!
//! Records households offline in a local store, shows them, and syncs with the registry server.
//! Every message is Vietnamese first with English beside. `--json` prints one JSON document per
//! command instead of text. Exit codes: 0 done, 1 a failure (server unreachable or refusing,
//! store damaged), 2 bad input (a typo in a flag, an unknown household, a malformed file).

/// `println!` for what a command prints: a reader that went away (`ho list | head`) ends the
/// command quietly, where `println!` would panic on the broken pipe.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(error) = writeln!(std::io::stdout(), $($arg)*) {
            crate::stdout_failed(error);
        }
    }};
}

// The modules live in `ho/`, beside this crate root.
#[path = "ho/commands.rs"]
mod commands;
#[path = "ho/input.rs"]
mod input;
#[path = "ho/render.rs"]
mod render;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use client_core::{StoreError, SyncError, TransportError};
use protocol::household::{Date, Relationship, RoundKind, Sex, VoidReason};
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(
    name = "ho",
    version,
    about = "Rà soát hộ nghèo, hộ cận nghèo: ghi hộ ngoại tuyến và đồng bộ / Poor and near-poor household review: record households offline and sync"
)]
struct Cli {
    /// Thư mục dữ liệu trên máy / the folder of the device's data store.
    #[arg(long, env = "HO_STORE", default_value = "./ho-data", global = true)]
    store: PathBuf,
    /// In kết quả dạng JSON / print the result as one JSON document.
    #[arg(long)]
    json: bool,
    #[command(subcommand)]
    command: CommandArgs,
}

/// `--json` after a command name, as well as before it.
#[derive(Args, Debug, Default)]
struct JsonFlag {
    /// In kết quả dạng JSON / print the result as one JSON document.
    #[arg(long = "json")]
    json: bool,
}

#[derive(Subcommand, Debug)]
enum CommandArgs {
    /// Thiết lập thiết bị với máy chủ / set the device up against a server.
    Init {
        /// Địa chỉ máy chủ / the server's address, e.g. http://192.168.1.10:8080
        #[arg(long)]
        server: String,
        /// Mã thiết bị (mặc định: giữ mã cũ hoặc tạo mới) / the device id (default: keep the
        /// store's, or make a new one).
        #[arg(long)]
        device_id: Option<Uuid>,
        /// Tên đăng nhập của người dùng thiết bị / the user this device is enrolled for.
        #[arg(long)]
        user: String,
        /// Đọc mật khẩu từ dòng đầu của stdin (mặc định: biến HO_PASSWORD, hoặc hỏi) / read the
        /// password from the first line of stdin (default: the HO_PASSWORD variable, or ask).
        #[arg(long)]
        password_stdin: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Thêm hộ mới / record a new household.
    Add(AddArgs),
    /// Sửa hộ / edit a household.
    Edit(EditArgs),
    /// Thêm hoặc bớt thành viên / add or remove a member.
    Member {
        #[command(subcommand)]
        action: MemberAction,
    },
    /// Hủy hộ (trùng, chuyển đi, tạo nhầm) / void a household (duplicate, moved away, mistake).
    Void {
        /// Mã hộ hoặc phần đầu của mã / the household id or a unique start of it.
        id: String,
        #[arg(long, value_enum)]
        reason: VoidReasonArg,
        /// Ghi chú / a note.
        #[arg(long, default_value = "")]
        note: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Bỏ hủy hộ / undo a void.
    Unvoid {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Danh sách hộ / list households.
    List {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Xem chi tiết một hộ / show one household.
    Show {
        id: String,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Thay đổi chờ gửi / changes waiting to be sent.
    Pending {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Xuất thay đổi chờ gửi ra tệp / export the changes waiting to be sent to a file, one JSON
    /// line each with its household, to carry them to another device if this one fails.
    ExportPending {
        /// The file to write; it must not exist yet.
        file: PathBuf,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Xung đột chờ giám sát viên / conflicts waiting for a supervisor.
    Conflicts {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Thay đổi bị từ chối / rejected changes.
    Rejected {
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Đồng bộ với máy chủ / sync with the server.
    Sync {
        #[command(flatten)]
        out: JsonFlag,
    },
}

/// With `--json FILE` taken by the record file, JSON output is `ho --json add …`.
#[derive(Args, Debug)]
struct AddArgs {
    /// Tệp JSON của hộ (mã tự tạo nếu thiếu) / a household JSON file (ids are made if missing).
    #[arg(long = "json", value_name = "FILE", conflicts_with_all = ["commune", "village", "address", "head_name", "head_dob", "head_sex"])]
    file: Option<PathBuf>,
    /// Mã xã (5 chữ số) / the commune's 5-digit code.
    #[arg(long, required_unless_present = "file")]
    commune: Option<String>,
    /// Thôn, tổ dân phố / the village.
    #[arg(long, required_unless_present = "file")]
    village: Option<String>,
    /// Địa chỉ / the address.
    #[arg(long, required_unless_present = "file")]
    address: Option<String>,
    /// Họ tên chủ hộ / the head's full name.
    #[arg(long, required_unless_present = "file")]
    head_name: Option<String>,
    /// Ngày sinh chủ hộ (YYYY-MM-DD) / the head's date of birth.
    #[arg(long, required_unless_present = "file", value_parser = input::parse_date)]
    head_dob: Option<Date>,
    /// Giới tính chủ hộ / the head's sex.
    #[arg(long, required_unless_present = "file", value_enum)]
    head_sex: Option<SexArg>,
    /// Số CCCD chủ hộ / the head's personal ID number.
    #[arg(long)]
    head_personal_id: Option<String>,
    /// Năm rà soát (mặc định: năm nay) / the review year (default: this year).
    #[arg(long)]
    year: Option<u16>,
    /// Kỳ rà soát / the kind of review.
    #[arg(long, value_enum, default_value = "periodic")]
    round: RoundArg,
    /// Thu nhập ước tính, đồng/người/tháng / estimated income, VND per person per month.
    #[arg(long)]
    income: Option<u64>,
}

/// With `--json FILE` taken by the record file, JSON output is `ho --json edit …`.
#[derive(Args, Debug)]
struct EditArgs {
    /// Mã hộ hoặc phần đầu của mã / the household id or a unique start of it.
    id: String,
    /// Tệp JSON thay cả bản ghi / a household JSON file replacing the whole record.
    #[arg(long = "json", value_name = "FILE")]
    file: Option<PathBuf>,
    #[arg(long)]
    address: Option<String>,
    #[arg(long)]
    village: Option<String>,
    #[arg(long)]
    commune: Option<String>,
    /// Thu nhập ước tính, đồng/người/tháng / estimated income, VND per person per month.
    #[arg(long)]
    income: Option<u64>,
    /// Diện tích nhà, m² / floor area in m².
    #[arg(long)]
    floor_area: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum MemberAction {
    /// Thêm thành viên / add a member.
    Add {
        /// Mã hộ / the household id or a unique start of it.
        id: String,
        #[arg(long)]
        name: String,
        #[arg(long, value_parser = input::parse_date)]
        dob: Date,
        #[arg(long, value_enum)]
        sex: SexArg,
        #[arg(long, value_enum)]
        relationship: RelationshipArg,
        #[arg(long)]
        personal_id: Option<String>,
        /// Không có bảo hiểm y tế / has no health insurance.
        #[arg(long)]
        no_insurance: bool,
        #[command(flatten)]
        out: JsonFlag,
    },
    /// Bớt thành viên / remove a member.
    Remove {
        id: String,
        /// Mã thành viên hoặc phần đầu / the member id or a unique start of it.
        member: String,
        #[command(flatten)]
        out: JsonFlag,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum SexArg {
    Male,
    Female,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RoundArg {
    Periodic,
    Monthly,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum RelationshipArg {
    Head,
    Spouse,
    Child,
    Parent,
    Grandchild,
    Sibling,
    Other,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum VoidReasonArg {
    Duplicate,
    #[value(name = "moved_away", alias = "moved-away")]
    MovedAway,
    #[value(name = "created_by_mistake", alias = "created-by-mistake")]
    CreatedByMistake,
    Other,
}

impl From<SexArg> for Sex {
    fn from(arg: SexArg) -> Sex {
        match arg {
            SexArg::Male => Sex::Male,
            SexArg::Female => Sex::Female,
        }
    }
}

impl From<RoundArg> for RoundKind {
    fn from(arg: RoundArg) -> RoundKind {
        match arg {
            RoundArg::Periodic => RoundKind::Periodic,
            RoundArg::Monthly => RoundKind::Monthly,
        }
    }
}

impl From<RelationshipArg> for Relationship {
    fn from(arg: RelationshipArg) -> Relationship {
        match arg {
            RelationshipArg::Head => Relationship::Head,
            RelationshipArg::Spouse => Relationship::Spouse,
            RelationshipArg::Child => Relationship::Child,
            RelationshipArg::Parent => Relationship::Parent,
            RelationshipArg::Grandchild => Relationship::Grandchild,
            RelationshipArg::Sibling => Relationship::Sibling,
            RelationshipArg::Other => Relationship::Other,
        }
    }
}

impl From<VoidReasonArg> for VoidReason {
    fn from(arg: VoidReasonArg) -> VoidReason {
        match arg {
            VoidReasonArg::Duplicate => VoidReason::Duplicate,
            VoidReasonArg::MovedAway => VoidReason::MovedAway,
            VoidReasonArg::CreatedByMistake => VoidReason::CreatedByMistake,
            VoidReasonArg::Other => VoidReason::Other,
        }
    }
}

/// The validated configuration a command runs with.
#[derive(Debug)]
pub struct Config {
    pub store: PathBuf,
    pub json: bool,
}

/// Why a command failed: bad input (exit 2) or a failure (exit 1), with a message that says
/// what was wrong, where, and what to do.
#[derive(Debug)]
pub enum Fail {
    Input(String),
    Failed(String),
}

impl Fail {
    fn exit_code(&self) -> u8 {
        match self {
            Fail::Input(_) => 2,
            Fail::Failed(_) => 1,
        }
    }

    fn message(&self) -> &str {
        match self {
            Fail::Input(message) | Fail::Failed(message) => message,
        }
    }
}

impl From<StoreError> for Fail {
    fn from(error: StoreError) -> Fail {
        match error {
            StoreError::Invalid(_) | StoreError::NotFound(_) | StoreError::OtherDevice { .. } => {
                Fail::Input(error.to_string())
            }
            StoreError::Open { .. }
            | StoreError::Layout { .. }
            | StoreError::Io(_)
            | StoreError::Flush(_)
            | StoreError::Corrupt { .. } => Fail::Failed(error.to_string()),
        }
    }
}

impl From<SyncError> for Fail {
    fn from(error: SyncError) -> Fail {
        match error {
            SyncError::NotSetUp | SyncError::Transport(TransportError::InvalidUrl { .. }) => {
                Fail::Input(error.to_string())
            }
            SyncError::Transport(TransportError::Denied { .. }) => Fail::Failed(format!(
                "{error}\nĐồng bộ dừng. Nếu thiết bị đã bị thu hồi, các thay đổi đã gửi được giữ để giám sát viên xem xét; xem `ho rejected` / the sync stopped. If this device was revoked, the changes it sent are kept for your supervisor to review; see `ho rejected`"
            )),
            SyncError::Store(store) => Fail::from(store),
            other => Fail::Failed(format!(
                "{other}\nĐồng bộ dừng; dữ liệu trên máy vẫn nguyên vẹn, lần đồng bộ sau sẽ tiếp tục / the sync stopped; everything on the device is kept and the next sync resumes"
            )),
        }
    }
}

/// Output that cannot be written: nobody is reading any more (a closed pipe) ends the command
/// as if it had finished; anything else is reported on stderr.
fn stdout_failed(error: std::io::Error) -> ! {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("Lỗi / Error: không ghi được kết quả / could not write the output: {error}");
    std::process::exit(1);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut json = cli.json;
    let command = commands::Command::from_args(cli.command, &mut json);
    let config = Config {
        store: cli.store,
        json,
    };
    match command.and_then(|command| commands::run(&config, command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(fail) => {
            if config.json {
                let document = serde_json::json!({
                    "ok": false,
                    "exit_code": fail.exit_code(),
                    "error": fail.message(),
                });
                out!("{document}");
            } else {
                eprintln!("Lỗi / Error: {}", fail.message());
            }
            ExitCode::from(fail.exit_code())
        }
    }
}
