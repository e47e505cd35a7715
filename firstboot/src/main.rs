fn main() {
    println!("Meetbox first-boot setup");
}
