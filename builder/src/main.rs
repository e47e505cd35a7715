fn main() {
    println!("meetbox");
}
