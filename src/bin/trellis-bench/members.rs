//! `--room-members N`: idle local members registered and joined to every room before the sends.

use crate::{Options, client::Client};

/// Registers `count` idle users and joins each to every room, eight requests at a time.
pub(crate) async fn add_members(
    client: &Client,
    options: &Options,
    rooms: &[String],
    count: usize,
) -> Result<(), String> {
    pub(crate) const PARALLEL: usize = 8;
    let mut tasks = Vec::new();
    for lane in 0..PARALLEL {
        let (client, rooms) = (client.clone(), rooms.to_vec());
        let (secret, prefix) = (options.registration_secret.clone(), options.prefix.clone());
        tasks.push(tokio::spawn(async move {
            for i in (lane..count).step_by(PARALLEL) {
                let member =
                    client.register(&secret, &format!("{prefix}_member_{i}")).await.ok_or("registration failed")?;
                for room in &rooms {
                    client.join(&member.token, room).await.ok_or("join failed")?;
                }
            }
            Ok::<(), &'static str>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    Ok(())
}
