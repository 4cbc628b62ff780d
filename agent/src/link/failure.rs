//! Why a connection attempt or a connection failed, in words an operator can act on.
//!
//! rumqttc reports a refused login in three ways depending on the broker: a CONNACK with a
//! return code (Mosquitto), or the socket closed before any CONNACK (rumqttd, and brokers that
//! drop unauthenticated clients), which rumqttc reports as `ConnectionAborted` or an I/O error.
//! The last case is named as "closed during login" with the credentials as the likely cause.

use std::io::ErrorKind;

use rumqttc::{ConnectReturnCode, ConnectionError, StateError};

/// The `reason` label of `pantau_agent_mqtt_connection_errors_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// No TCP connection: refused, unreachable, name not resolved, timed out.
    Unreachable,
    /// The broker answered the login with "bad user name or password".
    BadCredentials,
    /// The broker answered the login with "not authorized".
    NotAuthorized,
    /// The broker refused the login for another reason (client id, protocol, unavailable).
    Refused,
    /// The broker closed the connection before answering the login.
    ClosedDuringLogin,
    /// The TLS handshake failed: an untrusted or misnamed broker certificate, or the broker
    /// refused ours (or has none).
    Tls,
    /// The broker answered with bytes that are not MQTT, typically a TLS port's alert to a
    /// plain `mqtt://` client.
    NotMqtt,
    /// An established connection broke.
    Lost,
}

impl Failure {
    pub const ALL: [Failure; 8] = [
        Failure::Unreachable,
        Failure::BadCredentials,
        Failure::NotAuthorized,
        Failure::Refused,
        Failure::ClosedDuringLogin,
        Failure::Tls,
        Failure::NotMqtt,
        Failure::Lost,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Failure::Unreachable => "unreachable",
            Failure::BadCredentials => "bad_credentials",
            Failure::NotAuthorized => "not_authorized",
            Failure::Refused => "refused",
            Failure::ClosedDuringLogin => "closed_during_login",
            Failure::Tls => "tls",
            Failure::NotMqtt => "not_mqtt",
            Failure::Lost => "lost",
        }
    }

    /// Classifies `error`; `connected` says whether the connection had been established.
    pub fn classify(error: &ConnectionError, connected: bool) -> Failure {
        if connected {
            return Failure::Lost;
        }
        if pantau_runtime::mqtt_tls::is_tls_error(error) {
            return Failure::Tls;
        }
        match error {
            ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword) => {
                Failure::BadCredentials
            }
            ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized) => {
                Failure::NotAuthorized
            }
            ConnectionError::ConnectionRefused(_) | ConnectionError::NotConnAck(_) => {
                Failure::Refused
            }
            ConnectionError::MqttState(StateError::ConnectionAborted) => Failure::ClosedDuringLogin,
            error if pantau_runtime::mqtt_tls::is_not_mqtt(error) => Failure::NotMqtt,
            ConnectionError::Io(error)
            | ConnectionError::MqttState(StateError::Io(error))
            | ConnectionError::MqttState(StateError::Deserialization(
                rumqttc::mqttbytes::Error::Io(error),
            )) => match error.kind() {
                ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::UnexpectedEof
                | ErrorKind::BrokenPipe => Failure::ClosedDuringLogin,
                _ => Failure::Unreachable,
            },
            _ => Failure::Unreachable,
        }
    }

    /// What the operator should read in the log.
    pub fn advice(self) -> &'static str {
        match self {
            Failure::Unreachable => "broker not reachable; check mqtt.url and the network",
            Failure::BadCredentials => {
                "broker refused the login: bad user name or password \
                 (mqtt.username, mqtt.password)"
            }
            Failure::NotAuthorized => {
                "broker refused the login: not authorized (check mqtt.username, mqtt.password \
                 and the broker's users)"
            }
            Failure::Refused => "broker refused the connection",
            Failure::ClosedDuringLogin => {
                "broker closed the connection during login; the credentials \
                 (mqtt.username, mqtt.password), the client id, or a TLS-only port reached \
                 with mqtt:// (use mqtts://) are the likely cause"
            }
            Failure::NotMqtt => {
                "the broker's answer is not MQTT: most likely a TLS port reached with mqtt:// \
                 (use mqtts://), or not an MQTT broker at all"
            }
            Failure::Tls => {
                "TLS with the broker failed: check that mqtt.ca_file holds the CA of the \
                 broker's certificate, that the certificate names the host in mqtt.url, and \
                 that mqtt.client_cert_file is set and signed by a CA the broker trusts"
            }
            Failure::Lost => "lost the broker connection, reconnecting",
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn login_refusals_are_told_apart() {
        let cases = [
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword),
                Failure::BadCredentials,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized),
                Failure::NotAuthorized,
            ),
            (
                ConnectionError::ConnectionRefused(ConnectReturnCode::BadClientId),
                Failure::Refused,
            ),
            (
                ConnectionError::MqttState(StateError::ConnectionAborted),
                Failure::ClosedDuringLogin,
            ),
            (
                ConnectionError::Io(io::Error::from(ErrorKind::ConnectionReset)),
                Failure::ClosedDuringLogin,
            ),
            (
                ConnectionError::Io(io::Error::from(ErrorKind::ConnectionRefused)),
                Failure::Unreachable,
            ),
            (ConnectionError::NetworkTimeout, Failure::Unreachable),
            // mqtt:// to a TLS port: Mosquitto resets, rustls answers with an alert record.
            (
                ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::mqttbytes::Error::Io(io::Error::from(ErrorKind::ConnectionReset)),
                )),
                Failure::ClosedDuringLogin,
            ),
            (
                ConnectionError::MqttState(StateError::Deserialization(
                    rumqttc::mqttbytes::Error::BoundaryCrossed(768),
                )),
                Failure::NotMqtt,
            ),
            (
                ConnectionError::Io(io::Error::new(
                    ErrorKind::InvalidData,
                    rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
                )),
                Failure::Tls,
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(Failure::classify(&error, false), expected, "{error}");
        }
        let aborted = ConnectionError::MqttState(StateError::ConnectionAborted);
        assert_eq!(Failure::classify(&aborted, true), Failure::Lost);
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let labels: std::collections::HashSet<_> =
            Failure::ALL.iter().map(|f| f.as_str()).collect();
        assert_eq!(labels.len(), Failure::ALL.len());
    }
}
