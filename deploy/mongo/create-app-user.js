// Run by the mongo image on its first start (empty volume), as the administrator: the app's own
// user, which may read and write the `livestream` database and nothing else (docs/deployment.md).
const password = process.env.MONGO_APP_PASSWORD;
if (!password) {
  throw new Error("MONGO_APP_PASSWORD is not set");
}
db.getSiblingDB("livestream").createUser({
  user: "livestream",
  pwd: password,
  roles: [{ role: "readWrite", db: "livestream" }],
});
