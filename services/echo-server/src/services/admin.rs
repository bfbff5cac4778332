//! `echo.v1.AdminService`: flips the health the server reports, so failover can
//! be rehearsed without killing processes.

use grpc_echo::echo::v1::admin_service_server::AdminService as AdminServiceApi;
use grpc_echo::echo::v1::{HealthStatus, SetHealthRequest, SetHealthResponse};
use tonic::{Request, Response, Status};
use tonic_health::ServingStatus;

use crate::error::EchoError;
use crate::health::Health;

/// Implements `echo.v1.AdminService`.
#[derive(Debug, Clone)]
pub(crate) struct AdminService {
    health: Health,
}

impl AdminService {
    pub(crate) fn new(health: Health) -> Self {
        Self { health }
    }
}

#[tonic::async_trait]
impl AdminServiceApi for AdminService {
    async fn set_health(
        &self,
        request: Request<SetHealthRequest>,
    ) -> Result<Response<SetHealthResponse>, Status> {
        let request = request.into_inner();
        let status = match HealthStatus::try_from(request.status) {
            Ok(HealthStatus::Serving) => ServingStatus::Serving,
            Ok(HealthStatus::NotServing) => ServingStatus::NotServing,
            _ => {
                return Err(EchoError::invalid(
                    "status",
                    "must be HEALTH_STATUS_SERVING or HEALTH_STATUS_NOT_SERVING",
                )
                .into());
            }
        };
        if !request.service.is_empty() && !self.health.served().contains(&request.service.as_str())
        {
            return Err(Status::not_found(format!(
                "no service {:?} is served here",
                request.service
            )));
        }
        tracing::warn!(service = %request.service, ?status, "health set by the admin service");
        self.health.set(&request.service, status).await;
        Ok(Response::new(SetHealthResponse {}))
    }
}
