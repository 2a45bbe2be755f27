//! The validity of an X.509 certificate, read from its DER: enough of ASN.1 to find
//! `tbsCertificate.validity` (RFC 5280, 4.1), so that an expired certificate is told, and its
//! expiry exported, without a certificate parsing library.

use chrono::NaiveDateTime;
use rustls::pki_types::CertificateDer;

/// (not after, not before) of `certificate`, as Unix time; `None` if it does not read.
pub fn validity(certificate: &CertificateDer<'_>) -> Option<(i64, i64)> {
    let (tag, certificate, _) = element(certificate.as_ref())?;
    if tag != SEQUENCE {
        return None;
    }
    let (tag, tbs, _) = element(certificate)?;
    if tag != SEQUENCE {
        return None;
    }
    // [0] version (optional), serialNumber, signature, issuer, then validity.
    let (tag, _, after_version) = element(tbs)?;
    let tbs = if tag == VERSION { after_version } else { tbs };
    let tbs = skip(tbs)?;
    let tbs = skip(tbs)?;
    let tbs = skip(tbs)?;
    let (tag, validity, _) = element(tbs)?;
    if tag != SEQUENCE {
        return None;
    }
    let (kind, not_before, rest) = element(validity)?;
    let not_before = time(kind, not_before)?;
    let (kind, not_after, _) = element(rest)?;
    let not_after = time(kind, not_after)?;
    Some((not_after, not_before))
}

/// What follows the first element of `input`.
fn skip(input: &[u8]) -> Option<&[u8]> {
    element(input).map(|(_, _, rest)| rest)
}

const SEQUENCE: u8 = 0x30;
const VERSION: u8 = 0xa0;
const UTC_TIME: u8 = 0x17;
const GENERALIZED_TIME: u8 = 0x18;

/// The first element of `input`: its tag, its contents, and what follows it.
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (length, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let bytes = usize::from(first & 0x7f);
        if bytes == 0 || bytes > 4 || rest.len() < bytes {
            return None;
        }
        let length = rest[..bytes]
            .iter()
            .fold(0usize, |length, byte| (length << 8) | usize::from(*byte));
        (length, &rest[bytes..])
    };
    if rest.len() < length {
        return None;
    }
    Some((tag, &rest[..length], &rest[length..]))
}

/// A UTCTime (`YYMMDDHHMMSSZ`, years 1950..2049) or GeneralizedTime (`YYYYMMDDHHMMSSZ`).
fn time(kind: u8, contents: &[u8]) -> Option<i64> {
    let text = std::str::from_utf8(contents).ok()?;
    let text = text.strip_suffix('Z')?;
    let full = match kind {
        UTC_TIME if text.len() == 12 => {
            let year: u32 = text[..2].parse().ok()?;
            let century = if year >= 50 { "19" } else { "20" };
            format!("{century}{text}")
        }
        GENERALIZED_TIME if text.len() == 14 => text.to_string(),
        _ => return None,
    };
    let time = NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%S").ok()?;
    Some(time.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;

    /// A certificate made by `openssl req -x509 -newkey ec -pkeyopt
    /// ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=test`, valid from
    /// 2026-12-01 21:10:13 to 2026-12-03 21:10:13 UTC.
    const CERTIFICATE: &str = include_str!("certificate.test.pem");

    #[test]
    fn the_validity_of_a_certificate_is_read_from_its_der() {
        let der = CertificateDer::from_pem_slice(CERTIFICATE.as_bytes()).unwrap();
        let (not_after, not_before) = validity(&der).unwrap();
        let shown = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
        assert_eq!(shown(not_before), "2026-12-01T21:10:13+00:00");
        assert_eq!(shown(not_after), "2026-12-03T21:10:13+00:00");
        assert_eq!(
            validity(&CertificateDer::from(vec![0x30, 0x03, 0x02])),
            None
        );
        assert_eq!(time(UTC_TIME, b"491231235959Z"), Some(2524607999));
        assert_eq!(time(UTC_TIME, b"500101000000Z"), Some(-631152000));
    }
}
