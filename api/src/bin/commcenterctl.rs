//! `commcenterctl`: the operators' command line.
//!
//! - `migrate`: apply the database migrations.
//! - `token --user U --role R [--customer C] [--ttl-hours H]`: print a signed bearer
//!   token (for trying and testing the API).

use clap::{Parser, Subcommand};

use commcenter_shared::{
    auth::{self, Claims},
    db,
    domain::{CustomerId, Role, UserId},
    settings::Settings,
};

#[derive(Parser)]
#[command(name = "commcenterctl", about = "Operate Commcenter", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply the database migrations (DATABASE_URL); creates the database if missing.
    Migrate,
    /// Print a signed bearer token (JWT_SECRET) on stdout.
    Token {
        /// The user id (the token's subject).
        #[arg(long)]
        user: String,
        /// customer, staff, crew or operator.
        #[arg(long)]
        role: String,
        /// The customer a customer token is bound to.
        #[arg(long)]
        customer: Option<String>,
        /// How long the token is valid.
        #[arg(long, default_value_t = 24)]
        ttl_hours: i64,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Cli::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::from_env()?;
    match cli.command {
        Command::Migrate => {
            db::ensure_database(&settings.database).await?;
            let pool = db::connect(&settings.database).await?;
            db::migrate(&pool).await?;
            eprintln!("migrations applied");
        }
        Command::Token {
            user,
            role,
            customer,
            ttl_hours,
        } => {
            let role = Role::parse(&role)?;
            let customer_id = customer.as_deref().map(CustomerId::parse).transpose()?;
            anyhow::ensure!(
                role != Role::Customer || customer_id.is_some(),
                "a customer token needs --customer"
            );
            anyhow::ensure!(ttl_hours > 0, "--ttl-hours must be positive");
            let claims = Claims {
                sub: UserId::parse(&user)?,
                role,
                customer_id,
                exp: chrono::Utc::now().timestamp() + ttl_hours * 3600,
            };
            let token = auth::issue(&claims, settings.auth.jwt_secret.expose());
            #[allow(clippy::print_stdout)]
            {
                println!("{token}");
            }
        }
    }
    Ok(())
}
