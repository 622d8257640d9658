use super::*;

fn reg(ip: &str) -> Registration {
    Registration {
        address: ip.parse().unwrap(),
        port: 53,
        node_name: Some("node1".into()),
    }
}

fn ips(ep: &Endpoints) -> Vec<String> {
    ep.subsets
        .iter()
        .flatten()
        .flat_map(|s| s.addresses.iter().flatten())
        .map(|a| a.ip.clone())
        .collect()
}

#[test]
fn new_endpoints_carry_dns_ports_and_address() {
    let ep = reg("172.18.0.11").new_endpoints();
    assert_eq!(ep.metadata.namespace.as_deref(), Some("kube-system"));
    assert_eq!(ep.metadata.name.as_deref(), Some("kube-dns"));
    assert_eq!(ips(&ep), vec!["172.18.0.11"]);
    let subset = &ep.subsets.as_ref().unwrap()[0];
    let address = &subset.addresses.as_ref().unwrap()[0];
    assert!(address.target_ref.is_none());
    assert_eq!(address.node_name.as_deref(), Some("node1"));
    let ports: Vec<_> = subset
        .ports
        .iter()
        .flatten()
        .map(|p| (p.name.clone().unwrap(), p.port, p.protocol.clone().unwrap()))
        .collect();
    assert_eq!(
        ports,
        vec![
            ("dns".into(), 53, "UDP".into()),
            ("dns-tcp".into(), 53, "TCP".into())
        ]
    );
}

#[test]
fn add_joins_existing_subset_once() {
    let ep = reg("172.18.0.11").new_endpoints();
    let ep = reg("172.18.0.12").add_to(ep).unwrap();
    assert_eq!(ips(&ep), vec!["172.18.0.11", "172.18.0.12"]);
    assert_eq!(ep.subsets.as_ref().unwrap().len(), 1);
    assert!(
        reg("172.18.0.12").add_to(ep).is_none(),
        "already present: no update"
    );
}

#[test]
fn add_to_empty_endpoints_creates_subset() {
    let ep = Endpoints::default();
    let ep = reg("10.0.0.1").add_to(ep).unwrap();
    assert_eq!(ips(&ep), vec!["10.0.0.1"]);
}

#[test]
fn add_with_other_port_makes_new_subset() {
    let ep = reg("172.18.0.11").new_endpoints();
    let other = Registration {
        port: 5353,
        ..reg("172.18.0.12")
    };
    let ep = other.add_to(ep).unwrap();
    assert_eq!(ep.subsets.as_ref().unwrap().len(), 2);
}

#[test]
fn remove_drops_address_and_empty_subsets() {
    let ep = reg("172.18.0.11").new_endpoints();
    let ep = reg("172.18.0.12").add_to(ep).unwrap();
    let ep = reg("172.18.0.11").remove_from(ep).unwrap();
    assert_eq!(ips(&ep), vec!["172.18.0.12"]);
    let ep = reg("172.18.0.12").remove_from(ep).unwrap();
    assert!(ep.subsets.unwrap().is_empty());
}

#[test]
fn remove_absent_is_no_update() {
    let ep = reg("172.18.0.11").new_endpoints();
    assert!(reg("172.18.0.99").remove_from(ep).is_none());
    assert!(reg("172.18.0.99")
        .remove_from(Endpoints::default())
        .is_none());
}
